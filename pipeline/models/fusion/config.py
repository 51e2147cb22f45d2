"""Configuration of the band-group fusion networks: presets, group inputs, per-band normalisation.

Each group network maps (its own bands and the finer groups' bands, bilinearly upsampled onto the output
grid, plus the RGB guide on that grid) to its own bands on the output grid (paper III-B, IV-C).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.bands import BAND_GROUPS, GROUP_10M, GROUP_20M, GROUP_60M, BandGroup
from pipeline.errors import ConfigError

#: `self_ensemble` sizes (1 = the network alone; `pipeline.models.fusion.ensemble.DIHEDRAL` order). The CLI's
#: `pipeline.config.ENSEMBLE_SIZES` is the same tuple (config sits below the models and cannot import them).
ENSEMBLE_SIZES = (1, 2, 4, 8)

#: Per-band reflectance mean/std used to normalise inputs and outputs: (x - mean) / std.
#: Source: NorskRegnesentral/DiffFuSR utils/normalize_denormalize.py (MIT), the table the published fusion
#: weights were trained with (reference manifest `fusion_normalisation.json`).
BAND_MEAN: dict[str, float] = {
    "B01": 0.0769,
    "B02": 0.0906,
    "B03": 0.1162,
    "B04": 0.1318,
    "B05": 0.1619,
    "B06": 0.2275,
    "B07": 0.2500,
    "B08": 0.2588,
    "B8A": 0.2667,
    "B09": 0.2684,
    "B11": 0.2461,
    "B12": 0.1874,
}
BAND_STD: dict[str, float] = {
    "B01": 0.1708,
    "B02": 0.1672,
    "B03": 0.1614,
    "B04": 0.1677,
    "B05": 0.1698,
    "B06": 0.1513,
    "B07": 0.1490,
    "B08": 0.1515,
    "B8A": 0.1461,
    "B09": 0.2365,
    "B11": 0.1472,
    "B12": 0.1418,
}

GROUPS_BY_NAME: dict[str, BandGroup] = {g.name: g for g in BAND_GROUPS}


def group_input_bands(group: BandGroup) -> tuple[str, ...]:
    """Multispectral input bands of a group network: the finer groups' bands, then its own (paper IV-C).

    10m -> B02 B03 B04 B08; 20m -> those + B05 B06 B07 B8A B11 B12; 60m -> those + B01 B09.
    """
    order = [GROUP_10M, GROUP_20M, GROUP_60M]
    out: list[str] = []
    for g in order[: order.index(GROUPS_BY_NAME[group.name]) + 1]:
        out.extend(g.bands)
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class FusionNetConfig:
    """Architecture of one group network (two-branch + RRDB trunk).

    Attributes:
        group: "10m", "20m" or "60m".
        nf: feature channels of branches and trunk.
        gc: growth channels inside a residual dense block (the paper's "group convolutions of 32").
        nb_branch: RRDB blocks in each of the guide and multispectral branches (paper 5).
        nb_trunk: RRDB blocks in the merged trunk (paper 5).
        trunk_stride: 1 = trunk on the output grid (paper); 2 or 4 = trunk on a grid that much coarser
            (pixel-unshuffle in, pixel-shuffle out), cutting its cost by trunk_stride**2.
        residual: True = predict a per-band-scaled correction added to the bilinear upsampling of the
            group's own bands (our default); False = predict the bands directly (the reference v1 net).
        input_bands / output_bands: band ids in channel order (derived from `group` when empty).
        detail_only: with `residual`, remove the low-pass part of the correction (its block means on the
            group's input grid, bilinearly spread), so the network only adds detail and the output keeps
            the measured low frequencies (spectral fidelity on unseen scenes).
        norm: "table" = the network sees inputs normalised by the fixed per-band table (reference v1);
            "relative" = each band (and guide channel) is divided by its mean over the image, and the
            correction is scaled back by the band's mean: the injected detail follows each band's own
            brightness on unseen scenes (dark B01/SWIR over water and forest), the quantity ERGAS weighs;
            "local" = inputs as "relative", and the correction is multiplied by the band's local level
            (its bilinear upsampling) instead of its image mean: high-pass-modulation-style injection that
            keeps spectral angles in dark pixels.
        arch: "rrdb" (two-branch RRDB net, ours and the published v1) or "mtf" (the published v2
            MTF detail-injection net; its inputs are the group's own bands only; nf/nb/gc apply).
        backproject: iterations of sensor-consistency back-projection of the output onto the group's own
            measured bands (`pipeline.models.sensor.backproject`, default sensor MTF 0.3) after the network,
            at inference and in training; 0 = off (the reference nets). It restores the low frequencies the
            sensor measured, which `detail_only` alone leaves at their bilinear (blurred) values.
        injection_gain: 0 = off; r (2 or 4) = per image and band, scale the network's correction over the
            smooth answer (bicubic + back-projection) by a gain in [0, 1] measured by running the group one
            scale coarser (every input degraded by r) against the measured band
            (`pipeline.models.fusion.gain`): bands whose detail the guide does not predict in this scene
            (B09 water vapour, snow, cloud) get close to the smooth, sensor-consistent answer. Inference
            only; costs a group forward on 1/r^2 of the pixels.
        gain_gs: with `injection_gain`, also fit (jointly, gains in [0, 1]) the Gram-Schmidt detail
            (`pipeline.models.baselines.gram_schmidt` with the same guide, back-projected) as a second
            correction: where the network's detail is wrong but the guide's intensity detail is right (the
            60 m group on scenes unlike its training scenes), the classical injection takes over.
        self_ensemble: 1 = the network alone; 2, 4 or 8 = at inference, the mean of its predictions over that
            many flips/rotations of its inputs (`pipeline.models.fusion.ensemble`): lower error, the group
            net's cost times the size. Training is unaffected.
    """

    group: str
    arch: str = "rrdb"
    nf: int = 64
    gc: int = 32
    nb_branch: int = 5
    nb_trunk: int = 5
    trunk_stride: int = 1
    residual: bool = True
    detail_only: bool = True
    norm: str = "table"
    backproject: int = 0
    injection_gain: int = 0
    gain_gs: bool = False
    self_ensemble: int = 1
    input_bands: tuple[str, ...] = field(default=())
    output_bands: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.norm not in ("table", "relative", "local"):
            raise ConfigError(f"fusion norm {self.norm!r} is not 'table', 'relative' or 'local'")
        if self.arch not in ("rrdb", "mtf"):
            raise ConfigError(f"fusion arch {self.arch!r} is not 'rrdb' or 'mtf'")
        if self.group not in GROUPS_BY_NAME:
            raise ConfigError(f"fusion group {self.group!r} is not one of {sorted(GROUPS_BY_NAME)}")
        if self.trunk_stride not in (1, 2, 4):
            raise ConfigError(f"trunk_stride must be 1, 2 or 4, got {self.trunk_stride}")
        if self.injection_gain not in (0, 2, 4):
            raise ConfigError(f"fusion injection_gain must be 0 (off), 2 or 4, got {self.injection_gain}")
        if self.self_ensemble not in ENSEMBLE_SIZES:
            raise ConfigError(
                f"fusion self_ensemble must be one of {ENSEMBLE_SIZES} (1 = off), got {self.self_ensemble}"
            )
        if self.backproject < 0:
            raise ConfigError(f"fusion backproject must be >= 0 iterations, got {self.backproject}")
        if min(self.nf, self.gc) < 1 or min(self.nb_branch, self.nb_trunk) < 0:
            raise ConfigError(f"invalid fusion net sizes nf={self.nf} gc={self.gc}")
        g = GROUPS_BY_NAME[self.group]
        if not self.input_bands:
            object.__setattr__(self, "input_bands", g.bands if self.arch == "mtf" else group_input_bands(g))
        if not self.output_bands:
            object.__setattr__(self, "output_bands", g.bands)
        object.__setattr__(self, "input_bands", tuple(self.input_bands))
        object.__setattr__(self, "output_bands", tuple(self.output_bands))

    @property
    def factor(self) -> int:
        """Upsampling factor of the group to the output grid (4, 8, 24)."""
        return GROUPS_BY_NAME[self.group].factor_to_target

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict (inverse of `from_json`)."""
        d = asdict(self)
        d["input_bands"] = list(self.input_bands)
        d["output_bands"] = list(self.output_bands)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FusionNetConfig:
        keys = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in keys}
        for k in ("input_bands", "output_bands"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


#: Presets by name. `paper`: 5+5+5 RRDB, 64 ch on the full grid (as the reference v1).
#: `small`: CPU-sized, 32 ch, branches = conv + attention, three RRDB in a trunk on a 2x coarser grid.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "nf": 64,
        "gc": 32,
        "nb_branch": 5,
        "nb_trunk": 5,
        "trunk_stride": 1,
        "residual": True,
        "norm": "local",
        "backproject": 5,
    },
    "small": {
        "nf": 32,
        "gc": 16,
        "nb_branch": 0,
        "nb_trunk": 3,
        "trunk_stride": 2,
        "residual": True,
        "norm": "local",
        "backproject": 5,
    },
}


def preset_configs(preset: str, **overrides: Any) -> dict[str, FusionNetConfig]:
    """The three group configs of a preset, keyed "10m", "20m", "60m"."""
    if preset not in PRESETS:
        raise ConfigError(f"fusion preset {preset!r} is unknown; choose one of {sorted(PRESETS)}")
    kw = {**PRESETS[preset], **overrides}
    return {g.name: FusionNetConfig(group=g.name, **kw) for g in BAND_GROUPS}
