"""Wald-protocol training pairs for the fusion groups (pure tensor functions, paper III-B.1 and Fig. 3).

For group g with factor f to 2.5 m (4, 8, 24): every input band is degraded by f (random MTF-like
Gaussian blur + boxcar) and bilinearly upsampled back onto g's native grid; the target is g's native
bands; the guide is the native 10 m RGB degraded to g's grid. The network thus learns the mapping
"group grid / f -> group grid" that it applies at inference from the native grid to 2.5 m.
With an `SRGuide` (pipeline.train.srguide) the guide is instead the diffusion SR of the
Wald-degraded RGB, as at inference (`difffusr train fusion --sr-guide`).

The x4 pair (`make_wald_x4_pair`, `difffusr train fusion --wald-x4 60m`) is the same step one octave
coarser, in the geometry of the Wald x4 evaluation: every band degraded by 4, the net's output on the
native 10 m grid. For the 60 m group the inputs are then 40/80/240 m (the inference ratios 4/8/24 to the
output grid, unchanged) and the target, the native 60 m bands, is known only as the sensor-degraded
(blur + boxcar x6) output: the loss compares `wald_degrade(prediction, 6)` with it (`wald_l1_loss`).
It needs a 10 m side of only 24 px, where the x24 pair needs 144, so the 1.2 km patches train the 60 m
net too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from pipeline.bands import RGB_BANDS, group_of
from pipeline.models.fusion.config import FusionNetConfig
from pipeline.models.fusion.normalise import normalise
from pipeline.models.sensor import default_sigma, gaussian_blur, upsample, wald_degrade

#: Range of the system MTF at the coarse Nyquist drawn per band for the training blur (blind degradation);
#: the evaluation default is 0.3.
TRAIN_MTF_RANGE: tuple[float, float] = (0.18, 0.45)
#: Largest extra blur (pixels of the group grid) put on the training guide, with probability 1/2, so the
#: network does not take the guide as exact (the SR guide at inference is a prediction).
GUIDE_MAX_EXTRA_SIGMA: float = 1.5


@dataclass(frozen=True, kw_only=True)
class SRGuide:
    """One SR guide draw of a scene for a group (reflectance, batch dim 1), made by `pipeline.train.srguide`.

    Attributes:
        rgb_lr: (1, 3, H10 / f, W10 / f) native RGB (B04, B03, B02) degraded by the group factor f.
        sr: (1, 3, 4 H10 / f, 4 W10 / f) its diffusion SR x4 = the guide on the group grid.
        mtf: system MTF at the coarse Nyquist drawn for each of the three bands.
        steps: DDIM steps of the SR.
    """

    rgb_lr: torch.Tensor
    sr: torch.Tensor
    mtf: tuple[float, float, float]
    steps: int


def min_scene_size_10m(cfg: FusionNetConfig) -> int:
    """The 10 m side length must be a multiple of this for a group's Wald pair (16 for 20m, 144 for 60m)."""
    return max(cfg.factor * group_of(b).factor_to_10m for b in cfg.input_bands)


@dataclass(frozen=True, kw_only=True)
class WaldPair:
    """A group's training arrays on its native grid, all normalised, batch dim 1.

    Attributes:
        ms_up: (1, n_in, h, w) degraded inputs upsampled back onto the group grid.
        guide: (1, 3, h, w) RGB guide (B04, B03, B02) on the group grid.
        target: (1, n_out, h, w) native bands of the group.
        lr: (1, n_out, h / f, w / f) the group's own degraded bands before upsampling (what the sensor
            "measured"), for the back-projection of the prediction.
        factor: f, the ratio of the group grid to the grid of `lr`.
        target_box: 1 = the target is the band on the output grid; r > 1 (x4 pairs) = the target is known
            only as the output degraded by r with the sensor model; it is stored repeated r x r onto the
            output grid so crops of both kinds share one shape (`wald_l1_loss` reads one sample a block).
    """

    ms_up: torch.Tensor
    guide: torch.Tensor
    target: torch.Tensor
    lr: torch.Tensor
    factor: int
    target_box: int = 1


def _band_sigma(factor: int, generator: torch.Generator, random_blur: bool) -> float:
    """Blur sigma of a band degraded by `factor`: a random system MTF in TRAIN_MTF_RANGE, or the default."""
    if not random_blur:
        return default_sigma(factor)
    u = float(torch.rand((), generator=generator))
    return default_sigma(factor, TRAIN_MTF_RANGE[0] + u * (TRAIN_MTF_RANGE[1] - TRAIN_MTF_RANGE[0]))


def _jitter_guide(guide: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """With probability 1/2, blur a native guide by a random sigma up to GUIDE_MAX_EXTRA_SIGMA."""
    if float(torch.rand((), generator=generator)) < 0.5:
        return gaussian_blur(guide, float(torch.rand((), generator=generator)) * GUIDE_MAX_EXTRA_SIGMA)
    return guide


def _degraded_inputs(
    scene: dict[str, torch.Tensor],
    cfg: FusionNetConfig,
    *,
    degrade: int,
    out_ratio: int,
    generator: torch.Generator,
    random_blur: bool,
    rgb_lr: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every input band degraded by `degrade`, upsampled onto the output grid (`out_ratio` x the 10 m grid).

    `rgb_lr`: the degraded R, G, B an SR guide was made from (they replace those bands' degradation, as at
    inference); None = degrade them too. Returns (ms_up, lr_own), both normalised: the upsampled inputs and
    the group's own degraded bands (what the sensor "measured").
    """
    ins = []
    measured: dict[str, torch.Tensor] = {}
    for b in cfg.input_bands:
        if rgb_lr is not None and b in RGB_BANDS:
            i = RGB_BANDS.index(b)
            lr = rgb_lr[:, i : i + 1]
        else:
            lr = wald_degrade(scene[b], degrade, sigma=_band_sigma(degrade, generator, random_blur))
        measured[b] = lr
        ins.append(upsample(lr, degrade * group_of(b).factor_to_10m // out_ratio))
    ms_up = normalise(torch.cat(ins, 1), cfg.input_bands)
    lr_own = normalise(torch.cat([measured[b] for b in cfg.output_bands], 1), cfg.output_bands)
    return ms_up, lr_own


def make_wald_pair(
    scene: dict[str, torch.Tensor],
    cfg: FusionNetConfig,
    *,
    generator: torch.Generator,
    random_blur: bool = True,
    sr_guide: SRGuide | None = None,
) -> WaldPair:
    """Build the Wald pair of one group from a whole scene.

    Args:
        scene: band id -> (1, 1, H_b, W_b) float32 reflectance on the band's native grid; all 12 bands,
            grids nested (10 m side a multiple of `min_scene_size_10m(cfg)`).
        cfg: the group network's config (input/output bands, factor).
        generator: draws the per-band blur (MTF in TRAIN_MTF_RANGE) and the guide blur.
        random_blur: False -> the default sensor blur (MTF 0.3) and an exact guide (evaluation).
        sr_guide: an SR guide draw of this scene and group (pipeline.train.srguide): the guide is
            its SR (no extra blur) and the R, G, B inputs are its degraded RGB, the one the SR saw (as at
            inference); the other bands are degraded as usual.

    Returns:
        WaldPair on the group grid (side = H_10 / group's 10 m ratio).
    """
    f = cfg.factor
    g_ratio = group_of(cfg.output_bands[0]).factor_to_10m
    ms_up, lr_own = _degraded_inputs(
        scene,
        cfg,
        degrade=f,
        out_ratio=g_ratio,
        generator=generator,
        random_blur=random_blur,
        rgb_lr=None if sr_guide is None else sr_guide.rgb_lr,
    )
    h, w = scene[cfg.output_bands[0]].shape[-2:]
    if sr_guide is not None:
        guide = sr_guide.sr
        if tuple(guide.shape[-2:]) != (h, w):
            raise ValueError(f"SR guide is {tuple(guide.shape[-2:])}, the {cfg.group} group grid is {(h, w)}")
    else:
        rgb = torch.cat([scene[b] for b in RGB_BANDS], 1)
        guide = wald_degrade(rgb, g_ratio) if g_ratio > 1 else rgb
    if sr_guide is None and random_blur:
        guide = _jitter_guide(guide, generator)
    guide = normalise(guide, RGB_BANDS)
    target = normalise(torch.cat([scene[b] for b in cfg.output_bands], 1), cfg.output_bands)
    return WaldPair(
        ms_up=ms_up[..., :h, :w],
        guide=guide[..., :h, :w],
        target=target,
        lr=lr_own[..., : h // f, : w // f],
        factor=f,
    )


#: The Wald ratio of the x4 pairs (the evaluation's, pipeline.eval.protocol).
X4_RATIO: int = 4


def min_scene_size_10m_x4(cfg: FusionNetConfig) -> int:
    """The 10 m side must be a multiple of this for a group's x4 pair (24 when 60 m bands are inputs)."""
    return X4_RATIO * max(group_of(b).factor_to_10m for b in cfg.input_bands)


def make_wald_x4_pair(
    scene: dict[str, torch.Tensor],
    cfg: FusionNetConfig,
    *,
    generator: torch.Generator,
    random_blur: bool = True,
    sr_guide: SRGuide | None = None,
) -> WaldPair:
    """Build a group's x4 pair (the evaluation geometry, module docstring) from a whole scene.

    Args:
        scene: as `make_wald_pair`; 10 m side a multiple of `min_scene_size_10m_x4(cfg)`.
        cfg: the group network's config; its factor must be 4 x the group's 10 m ratio (4, 8, 24).
        generator: draws the per-band blur and the guide blur.
        random_blur: False -> the default sensor blur (MTF 0.3) and an exact guide.
        sr_guide: an SR guide of the 10 m group of this scene (RGB degraded by 4, SR on the 10 m grid); that
            group crops scenes to a multiple of 4 px, so the guide may run past this pair's grid and is cut
            to it (both crops keep the top-left corner).

    Returns:
        WaldPair on the 10 m grid; target_box = the group's 10 m ratio (6 for 60 m, 2 for 20 m, 1 for 10 m).
    """
    box = group_of(cfg.output_bands[0]).factor_to_10m
    if cfg.factor != X4_RATIO * box:
        raise ValueError(
            f"the {cfg.group} net's factor {cfg.factor} is not {X4_RATIO} x its 10 m ratio {box}"
        )
    h, w = scene["B02"].shape[-2:]
    if sr_guide is not None and (sr_guide.sr.shape[-2] < h or sr_guide.sr.shape[-1] < w):
        raise ValueError(f"SR guide is {tuple(sr_guide.sr.shape[-2:])}, smaller than the 10 m grid {(h, w)}")
    ms_up, lr_own = _degraded_inputs(
        scene,
        cfg,
        degrade=X4_RATIO,
        out_ratio=1,
        generator=generator,
        random_blur=random_blur,
        rgb_lr=None if sr_guide is None else sr_guide.rgb_lr[..., : h // X4_RATIO, : w // X4_RATIO],
    )
    if sr_guide is not None:
        guide = sr_guide.sr[..., :h, :w]
    else:
        guide = torch.cat([scene[b] for b in RGB_BANDS], 1)
        if random_blur:
            guide = _jitter_guide(guide, generator)
    target = normalise(torch.cat([scene[b] for b in cfg.output_bands], 1), cfg.output_bands)
    target = target.repeat_interleave(box, -2).repeat_interleave(box, -1)
    return WaldPair(
        ms_up=ms_up[..., :h, :w],
        guide=normalise(guide, RGB_BANDS)[..., :h, :w],
        target=target[..., :h, :w],
        lr=lr_own[..., : h // cfg.factor, : w // cfg.factor],
        factor=cfg.factor,
        target_box=box,
    )


class WaldCrops(NamedTuple):
    """A training batch of one group: crops of Wald pairs, normalised like the pairs.

    ms_up (n, n_in, size, size): the degraded inputs upsampled to the group grid; guide (n, 3, size, size);
    target (n, n_out, size, size): the native bands; lr (n, n_out, size / f, size / f): the group's measured
    (degraded) bands under the crop, for the back-projection (empty (n, n_out, 0, 0) when the crop is not
    aligned to them); box (n,) int64: each crop's `WaldPair.target_box`.
    """

    ms_up: torch.Tensor
    guide: torch.Tensor
    target: torch.Tensor
    lr: torch.Tensor
    box: torch.Tensor

    @classmethod
    def cat(cls, parts: list[WaldCrops]) -> WaldCrops:
        """One batch from several, field by field."""
        return cls(*(torch.cat(field) for field in zip(*parts, strict=True)))


def sample_crops(
    pair: WaldPair, size: int, n: int, *, generator: torch.Generator, augment: bool = True, align: int = 1
) -> WaldCrops:
    """Draw n random crops (with random flips / 90-degree turns) from a pair.

    `align`: crop offsets are multiples of this (the group factor keeps the degraded input's pixels
    aligned with the crop, as at inference); then the measured bands `pair.lr` are cropped and turned
    with the rest.

    Returns:
        WaldCrops of n crops, f = `pair.factor`; its lr is empty (n, n_out, 0, 0) unless `align` and
        `size` are multiples of f.
    """
    h, w = pair.target.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"scene grid {h}x{w} is smaller than the crop size {size}")
    if pair.target_box > 1 and (align % pair.target_box or size % pair.target_box):
        raise ValueError(f"crops of an x{pair.target_box} block target must be aligned to its blocks")
    f = pair.factor
    crop_lr = align % f == 0 and size % f == 0
    outs: list[list[torch.Tensor]] = [[], [], [], []]
    for _ in range(n):
        y = int(torch.randint(0, (h - size) // align + 1, (), generator=generator)) * align
        x = int(torch.randint(0, (w - size) // align + 1, (), generator=generator)) * align
        k = int(torch.randint(0, 4, (), generator=generator)) if augment else 0
        flip = augment and bool(torch.randint(0, 2, (), generator=generator))
        for i, t in enumerate((pair.ms_up, pair.guide, pair.target)):
            c = t[0, :, y : y + size, x : x + size]
            c = torch.rot90(c, k, (1, 2))
            if flip:
                c = torch.flip(c, (2,))
            outs[i].append(c)
        lr = (
            pair.lr[0, :, y // f : (y + size) // f, x // f : (x + size) // f]
            if crop_lr
            else pair.lr[0, :, :0, :0]
        )
        lr = torch.rot90(lr, k, (1, 2))
        outs[3].append(torch.flip(lr, (2,)) if flip else lr)
    return WaldCrops(*(torch.stack(o) for o in outs), box=torch.full((n,), pair.target_box, dtype=torch.long))


def wald_l1_loss(pred: torch.Tensor, crops: WaldCrops) -> torch.Tensor:
    """Mean over crops of each crop's L1 to its target (normalised units).

    A crop with `box` r > 1 (an x4 pair) is scored as the evaluation scores it: the prediction degraded by
    r with the sensor model (default MTF) against one target sample per r x r block. With every box 1 this
    is the plain L1 mean.
    """
    target = crops.target.to(pred.device)
    box = crops.box.tolist()
    per_crop = []
    for r in sorted(set(box)):
        idx = torch.tensor([i for i, b in enumerate(box) if b == r], device=pred.device)
        p, t = pred.index_select(0, idx), target.index_select(0, idx)
        if r > 1:
            p, t = wald_degrade(p, r), t[..., ::r, ::r]
        per_crop.append((p - t).abs().mean(dim=(1, 2, 3)))
    return torch.cat(per_crop).mean()


__all__ = [
    "X4_RATIO",
    "SRGuide",
    "WaldCrops",
    "WaldPair",
    "make_wald_pair",
    "make_wald_x4_pair",
    "min_scene_size_10m",
    "min_scene_size_10m_x4",
    "sample_crops",
    "wald_l1_loss",
]
