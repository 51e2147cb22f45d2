"""Wald-protocol training pairs for the fusion groups (pure tensor functions, paper III-B.1 and Fig. 3).

For group g with factor f to 2.5 m (4, 8, 24): every input band is degraded by f (random MTF-like
Gaussian blur + boxcar) and bilinearly upsampled back onto g's native grid; the target is g's native
bands; the guide is the native 10 m RGB degraded to g's grid. The network thus learns the mapping
"group grid / f -> group grid" that it applies at inference from the native grid to 2.5 m.
With an `SRGuide` (pipeline.train.srguide) the guide is instead the diffusion SR of the
Wald-degraded RGB, as at inference (`difffusr train fusion --sr-guide`).
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
    """

    ms_up: torch.Tensor
    guide: torch.Tensor
    target: torch.Tensor
    lr: torch.Tensor
    factor: int


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
    ins = []
    measured: dict[str, torch.Tensor] = {}
    for b in cfg.input_bands:
        native = scene[b]
        if sr_guide is not None and b in RGB_BANDS:
            lr = sr_guide.rgb_lr[:, RGB_BANDS.index(b) : RGB_BANDS.index(b) + 1]
            measured[b] = lr
            ins.append(upsample(lr, f * group_of(b).factor_to_10m // g_ratio))
            continue
        if random_blur:
            u = float(torch.rand((), generator=generator))
            mtf = TRAIN_MTF_RANGE[0] + u * (TRAIN_MTF_RANGE[1] - TRAIN_MTF_RANGE[0])
            sigma = default_sigma(f, mtf)
        else:
            sigma = default_sigma(f)
        lr = wald_degrade(native, f, sigma=sigma)
        measured[b] = lr
        up = f * group_of(b).factor_to_10m // g_ratio
        ins.append(upsample(lr, up))
    ms_up = normalise(torch.cat(ins, 1), cfg.input_bands)
    h, w = scene[cfg.output_bands[0]].shape[-2:]
    if sr_guide is not None:
        guide = sr_guide.sr
        if tuple(guide.shape[-2:]) != (h, w):
            raise ValueError(f"SR guide is {tuple(guide.shape[-2:])}, the {cfg.group} group grid is {(h, w)}")
    else:
        rgb = torch.cat([scene[b] for b in RGB_BANDS], 1)
        guide = wald_degrade(rgb, g_ratio) if g_ratio > 1 else rgb
    if sr_guide is None and random_blur and float(torch.rand((), generator=generator)) < 0.5:
        guide = gaussian_blur(guide, float(torch.rand((), generator=generator)) * GUIDE_MAX_EXTRA_SIGMA)
    guide = normalise(guide, RGB_BANDS)
    target = normalise(torch.cat([scene[b] for b in cfg.output_bands], 1), cfg.output_bands)
    lr_own = normalise(torch.cat([measured[b] for b in cfg.output_bands], 1), cfg.output_bands)
    return WaldPair(
        ms_up=ms_up[..., :h, :w],
        guide=guide[..., :h, :w],
        target=target,
        lr=lr_own[..., : h // f, : w // f],
        factor=f,
    )


class WaldCrops(NamedTuple):
    """A training batch of one group: crops of Wald pairs, normalised like the pairs.

    ms_up (n, n_in, size, size): the degraded inputs upsampled to the group grid; guide (n, 3, size, size);
    target (n, n_out, size, size): the native bands; lr (n, n_out, size / f, size / f): the group's measured
    (degraded) bands under the crop, for the back-projection (empty (n, n_out, 0, 0) when the crop is not
    aligned to them).
    """

    ms_up: torch.Tensor
    guide: torch.Tensor
    target: torch.Tensor
    lr: torch.Tensor

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
    return WaldCrops(*(torch.stack(o) for o in outs))


__all__ = ["SRGuide", "WaldCrops", "WaldPair", "make_wald_pair", "min_scene_size_10m", "sample_crops"]
