"""Wald's reduced-resolution protocol over scene folders, and the no-reference consistency check.

Wald (x `ratio`): every band of a real scene is degraded by `ratio` with the sensor model
(`pipeline.models.sensor.wald_degrade`), the degraded scene is super-resolved x4 by each method, and each
band is scored at its own native resolution against the original pixels: the SR output (on the grid
4/ratio times finer than the native 10 m) is degraded by (4 / ratio) * (native GSD / 10 m) onto the band's
native grid. For ratio 4 this evaluates 40 -> 10 m, 80 -> 20 m and 240 -> 60 m: the same x4 step as the
real 10 -> 2.5 m product, one octave coarser.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.bands import BAND_GROUPS, S2_BANDS, BandGroup
from pipeline.errors import ConfigError, DataError
from pipeline.eval import metrics as M
from pipeline.eval import opensr
from pipeline.eval.resample import degrade
from pipeline.io.scene_files import Scene

#: The SR factor of every method (10 m -> 2.5 m).
SR_FACTOR: int = 4
#: Wald ratios the protocol supports (the SR output must land on the native grid by an integer degrade).
SUPPORTED_RATIOS: tuple[int, ...] = (2, 4)


@dataclass(frozen=True, kw_only=True)
class WaldConfig:
    """Options of the Wald protocol.

    Attributes:
        ratio: degradation factor of the protocol (2 or 4).
        data_range: PSNR/SSIM dynamic range, reflectance units.
        crop: if set, the central crop of the 10 m grid to this many pixels (rounded down to a multiple of
            6 * ratio) is evaluated; None = the whole scene.
        seed: base seed of the stochastic methods.
        opensr: OpenSR-test score options (border_px is in 10 m-group HR pixels and is scaled per group).
    """

    ratio: int = 4
    data_range: float = 1.0
    crop: int | None = None
    seed: int = 0
    opensr: opensr.OpenSRConfig = field(default_factory=opensr.OpenSRConfig)

    def __post_init__(self) -> None:
        if self.ratio not in SUPPORTED_RATIOS:
            raise ConfigError(f"--ratio {self.ratio} is not supported; use one of {SUPPORTED_RATIOS}")
        if self.crop is not None and self.crop < 6 * self.ratio:
            raise ConfigError(
                f"--crop {self.crop} is smaller than one 60 m pixel of the degraded scene ({6 * self.ratio})"
            )


@dataclass(kw_only=True)
class MethodResult:
    """Scores of one method on one scene.

    Attributes:
        method: method name.
        seconds: wall time of the super-resolution call.
        bands: band id -> {psnr, ssim, rmse, mae, r2, cc}.
        groups: group name ("10m", "20m", "60m", "all") -> aggregated scores (means over bands, plus sam_deg
            and ergas per group).
        opensr: group name -> OpenSR-test scores (reflectance_l1, spectral_sad_deg, spatial_shift_px,
            synthesis, improvement, omission, hallucination).
        sr: group name -> (C, h, w) SR at the group's native grid (for figures).
        maps: group name -> per-pixel OpenSR maps (for figures).
    """

    method: str
    seconds: float
    bands: dict[str, dict[str, float]]
    groups: dict[str, dict[str, float]]
    opensr: dict[str, dict[str, float]]
    sr: dict[str, np.ndarray] = field(repr=False)
    maps: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)


@dataclass(kw_only=True)
class SceneResult:
    """Wald protocol outcome for one scene: reference and LR groups and every method's scores."""

    scene: str
    ratio: int
    shape10: tuple[int, int]
    reference: dict[str, np.ndarray] = field(repr=False)
    lr: dict[str, np.ndarray] = field(repr=False)
    methods: dict[str, MethodResult] = field(default_factory=dict)


def crop_for_ratio(scene: Scene, ratio: int, crop: int | None = None) -> Scene:
    """Cut the scene so the 10 m grid is a multiple of 6 * ratio (centred when `crop` is given)."""
    h, w = scene.b10.shape[-2:]
    unit = 6 * ratio
    th = (min(h, crop) if crop else h) // unit * unit
    tw = (min(w, crop) if crop else w) // unit * unit
    if th == 0 or tw == 0:
        raise DataError(
            f"scene {scene.name!r} ({h}x{w} at 10 m) is smaller than {unit} px, the Wald x{ratio} minimum"
        )
    y0 = ((h - th) // 2) // 6 * 6 if crop else 0
    x0 = ((w - tw) // 2) // 6 * 6 if crop else 0
    groups = []
    for arr, group in zip(scene.groups, BAND_GROUPS, strict=True):
        k = group.factor_to_10m
        groups.append(arr[:, y0 // k : (y0 + th) // k, x0 // k : (x0 + tw) // k])
    a, b, c, d, e, f = scene.transform
    return dataclasses.replace(
        scene, b10=groups[0], b20=groups[1], b60=groups[2], transform=(a, b, c + x0 * a, d, e, f + y0 * e)
    )


def group_bands(sr12: np.ndarray, group: BandGroup) -> np.ndarray:
    """The (C, H, W) slice of a 12-band S2-order stack holding `group`'s bands."""
    return sr12[[S2_BANDS.index(b) for b in group.bands]]


def score_group(sr: np.ndarray, ref: np.ndarray, group: BandGroup, *, ratio: int, data_range: float):
    """Per-band and group scores of one group at its native grid.

    Returns:
        (bands: band -> scores, group: aggregated scores incl. sam_deg and ergas).
    """
    bands = {b: M.band_scores(sr[i], ref[i], data_range=data_range) for i, b in enumerate(group.bands)}
    agg = {k: float(np.nanmean([s[k] for s in bands.values()])) for k in next(iter(bands.values()))}
    for i, b in enumerate(group.bands):  # per band: the safety net compares each band with the baselines
        bands[b]["ergas"] = M.ergas(sr[i : i + 1], ref[i : i + 1], ratio=ratio)
    agg["sam_deg"] = M.sam_deg(sr, ref) if sr.shape[0] > 1 else float("nan")
    agg["ergas"] = M.ergas(sr, ref, ratio=ratio)
    return bands, agg


def _opensr_cfg_for(group: BandGroup, cfg: WaldConfig) -> opensr.OpenSRConfig:
    """Border of the same ground extent in every group, a multiple of the ratio."""
    border = (cfg.opensr.border_px // group.factor_to_10m) // cfg.ratio * cfg.ratio
    return dataclasses.replace(cfg.opensr, border_px=border)


def wald_scene(
    scene: Scene, methods: list[str], cfg: WaldConfig, *, superresolve=None, options=None
) -> SceneResult:
    """Run the Wald protocol on one scene for every method.

    Args:
        scene: the scene at native resolution (reflectance, NaN = nodata).
        methods: method names understood by `pipeline.inference.scene.super_resolve_scene`.
        cfg: protocol options.
        superresolve: the scene super-resolution function (default: the project's `super_resolve_scene`).
        options: `MethodOptions` for the learned method (checkpoints, DDIM steps).

    Returns:
        SceneResult with the reference, the LR input and one MethodResult per method.
    """
    if superresolve is None:
        from pipeline.inference.scene import super_resolve_scene as superresolve
    scene = crop_for_ratio(scene, cfg.ratio, cfg.crop)
    ref = {g.name: arr for g, arr in zip(BAND_GROUPS, scene.groups, strict=True)}
    lr = {g.name: degrade(arr, cfg.ratio) for g, arr in zip(BAND_GROUPS, scene.groups, strict=True)}
    for name, arr in ref.items():
        if not np.isfinite(arr).any():
            raise DataError(f"scene {scene.name!r}: the {name} group is all nodata")
    result = SceneResult(
        scene=scene.name, ratio=cfg.ratio, shape10=scene.b10.shape[-2:], reference=ref, lr=lr
    )
    for method in methods:
        t0 = time.perf_counter()
        kwargs = {"options": options} if options is not None else {}
        sr12 = superresolve(lr["10m"], lr["20m"], lr["60m"], method, seed=cfg.seed, **kwargs)
        seconds = time.perf_counter() - t0
        result.methods[method] = score_method(method, sr12, ref, lr, cfg, seconds=seconds)
    return result


def score_method(
    method: str, sr12: np.ndarray, ref: dict, lr: dict, cfg: WaldConfig, *, seconds: float
) -> MethodResult:
    """Score one SR output (12, 4h, 4w) against the native reference groups (see module docstring)."""
    bands: dict[str, dict[str, float]] = {}
    groups: dict[str, dict[str, float]] = {}
    scores_os: dict[str, dict[str, float]] = {}
    maps: dict[str, dict[str, np.ndarray]] = {}
    sr_native: dict[str, np.ndarray] = {}
    for group in BAND_GROUPS:
        sr_full = group_bands(sr12, group)
        sr_g = degrade(sr_full, (SR_FACTOR // cfg.ratio) * group.factor_to_10m)
        sr_native[group.name] = sr_g
        b, g = score_group(sr_g, ref[group.name], group, ratio=cfg.ratio, data_range=cfg.data_range)
        bands.update(b)
        groups[group.name] = g
        ocfg = _opensr_cfg_for(group, cfg)
        cons = opensr.consistency(lr[group.name], sr_full, SR_FACTOR * group.factor_to_10m, cfg=cfg.opensr)
        corr = opensr.correctness(lr[group.name], sr_g, ref[group.name], cfg.ratio, cfg=ocfg)
        syn = opensr.synthesis(lr[group.name], sr_g, cfg.ratio, hr=ref[group.name], cfg=ocfg)
        scores_os[group.name] = {
            "reflectance_l1": cons["reflectance_l1"],
            "spectral_sad_deg": cons["spectral_sad_deg"],
            "spatial_shift_px": cons["spatial_shift_px"],
            "synthesis": syn,
            "improvement": corr.improvement,
            "omission": corr.omission,
            "hallucination": corr.hallucination,
            "border_px": ocfg.border_px,
        }
        maps[group.name] = corr.maps
    all_srs = [sr_native[g.name] for g in BAND_GROUPS]
    all_refs = [ref[g.name] for g in BAND_GROUPS]
    groups["all"] = {k: float(np.nanmean([s[k] for s in bands.values()])) for k in next(iter(bands.values()))}
    groups["all"]["sam_deg"] = float("nan")
    groups["all"]["ergas"] = _ergas_multi(all_srs, all_refs, cfg.ratio)
    return MethodResult(
        method=method,
        seconds=seconds,
        bands={b: bands[b] for b in S2_BANDS},
        groups=groups,
        opensr=scores_os,
        sr=sr_native,
        maps=maps,
    )


def _ergas_multi(srs: list[np.ndarray], refs: list[np.ndarray], ratio: int) -> float:
    """ERGAS over bands that live on different grids (each band's RMSE / mean on its own grid)."""
    terms = []
    for sr, ref in zip(srs, refs, strict=True):
        for b in range(sr.shape[0]):
            e = M.rmse(sr[b], ref[b])
            mu = float(np.nanmean(ref[b]))
            terms.append((e / mu) ** 2)
    return 100.0 / ratio * float(np.sqrt(np.mean(terms)))


# --------------------------------------------------------------------------- no-reference consistency
@dataclass(kw_only=True)
class ConsistencyResult:
    """An SR product checked against its own native inputs (paper IV-E.2)."""

    product: str
    inputs: str
    bands: dict[str, dict[str, float]]
    groups: dict[str, dict[str, float]]
    degraded: dict[str, np.ndarray] = field(repr=False)
    inputs_native: dict[str, np.ndarray] = field(repr=False)
    maps: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)


def consistency_check(
    sr12: np.ndarray,
    scene: Scene,
    *,
    product: str = "",
    data_range: float = 1.0,
    cfg: opensr.OpenSRConfig | None = None,
) -> ConsistencyResult:
    """Degrade a 12-band SR product (12, 4H, 4W) back to each group's grid and compare with the inputs.

    Args:
        sr12: SR reflectance on the grid 4x finer than `scene.b10`, S2 band order, NaN = nodata.
        scene: the native inputs, already cut to the product's footprint.
        cfg: OpenSR options; its border_px (product pixels) becomes border_px // factor LR pixels, cropped
            after the degrade-back.

    Returns:
        ConsistencyResult with Table-IV metrics (R^2, CC, SSIM, PSNR, MSE, ERGAS) per band and group and the
        OpenSR consistency scores per group.
    """
    cfg = cfg or opensr.OpenSRConfig()
    h, w = scene.b10.shape[-2:]
    if sr12.shape != (len(S2_BANDS), SR_FACTOR * h, SR_FACTOR * w):
        raise DataError(
            f"SR product {product!r} has shape {sr12.shape}; the inputs need ({len(S2_BANDS)}, "
            f"{SR_FACTOR * h}, {SR_FACTOR * w})"
        )
    bands: dict[str, dict[str, float]] = {}
    groups: dict[str, dict[str, float]] = {}
    degraded, native, maps = {}, {}, {}
    for group, inp in zip(BAND_GROUPS, scene.groups, strict=True):
        f = group.factor_to_target
        sr_full = group_bands(sr12, group)
        down = degrade(sr_full, f)
        degraded[group.name], native[group.name] = down, inp
        b, g = score_group(down, inp, group, ratio=f, data_range=data_range)
        for band in b:
            b[band]["mse"] = b[band]["rmse"] ** 2
        g["mse"] = float(np.nanmean([s["mse"] for s in b.values()]))
        lr_border = cfg.border_px // f if 2 * (cfg.border_px // f) < min(inp.shape[-2:]) else 0
        cons = opensr.consistency_degraded(
            opensr.crop_border(inp, lr_border), opensr.crop_border(down, lr_border), cfg=cfg
        )
        g.update({k: cons[k] for k in ("reflectance_l1", "spectral_sad_deg", "spatial_shift_px")})
        g["synthesis"] = opensr.synthesis(inp, sr_full, f, cfg=cfg)
        bands.update(b)
        groups[group.name] = g
        maps[group.name] = cons["maps"]
    return ConsistencyResult(
        product=product,
        inputs=scene.name,
        bands={b: bands[b] for b in S2_BANDS},
        groups=groups,
        degraded=degraded,
        inputs_native=native,
        maps=maps,
    )
