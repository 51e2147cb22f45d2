"""Baseline super-resolvers: bicubic interpolation and Gram-Schmidt (GSA) pansharpening.

Both take the three native band groups and return the 12 bands at 2.5 m in S2 order, like the learned
method, so evaluation and the pipeline treat every method alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.bands import BAND_GROUPS, GROUP_10M, RGB_BANDS, s2_order_index
from pipeline.models.measured import MIN_MASKED_PIXELS, measured_mask


def upsample(x: torch.Tensor, factor: int, mode: str = "bicubic") -> torch.Tensor:
    """(B,C,H,W) -> (B,C,H*f,W*f); bicubic/bilinear with align_corners=False (pixel-area convention)."""
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)


def upsample_groups(
    b10: torch.Tensor, b20: torch.Tensor, b60: torch.Tensor, mode: str = "bicubic"
) -> torch.Tensor:
    """Each group interpolated to 2.5 m and stacked in S2 order: (B,12,4H,4W)."""
    ups = [upsample(x, g.factor_to_target, mode) for x, g in zip((b10, b20, b60), BAND_GROUPS)]
    return torch.cat(ups, dim=1)[:, s2_order_index()]


def rgb_of(b10: torch.Tensor) -> torch.Tensor:
    """The (B04, B03, B02) guide from a 10 m group tensor (B,4,H,W)."""
    return b10[:, [GROUP_10M.bands.index(b) for b in RGB_BANDS]]


def bicubic(b10: torch.Tensor, b20: torch.Tensor, b60: torch.Tensor) -> torch.Tensor:
    """Bicubic interpolation of every band to 2.5 m. Returns (B,12,4H,4W)."""
    return upsample_groups(b10, b20, b60, "bicubic")


def gram_schmidt(
    b10: torch.Tensor, b20: torch.Tensor, b60: torch.Tensor, guide_rgb: torch.Tensor | None = None
) -> torch.Tensor:
    """Gram-Schmidt adaptive (GSA) pansharpening of every group with the RGB intensity as the pan band.

    For each group with factor f to 2.5 m: P = mean(guide RGB) at 2.5 m, P_low = P boxcar-averaged by f and
    interpolated back, and band_b = up(MS_b) + g_b * (P - P_low) with the GS injection gain
    g_b = cov(up(MS_b), P_low) / var(P_low), estimated per image. The pan is first matched to the mean and
    standard deviation of the group's mean band so that the injected detail is in the group's units.
    The statistics count only measured pixels (`pipeline.models.measured`): in a tile whose nodata or
    out-of-scene window was filled with copies of the nearest pixel, the copies would weigh the regression
    towards the edge pixels (docs/fusion.md, "Gram-Schmidt in filled tiles").

    Args:
        b10, b20, b60: native groups (B,4,H,W), (B,6,H/2,W/2), (B,2,H/6,W/6), reflectance.
        guide_rgb: (B,3,4H,4W) guide at 2.5 m; default: bicubic upsampled RGB of b10.

    Returns:
        (B,12,4H,4W) in S2 order; each sample computed alone (see below), so batch-invariant.
    """
    if guide_rgb is None:
        guide_rgb = upsample(rgb_of(b10), 4)
    if b10.shape[0] > 1:
        # ATen splits a reduction with one output across threads and one with several outputs by output, so
        # the per-image statistics round differently at batch 1 and batch 4 (4.8e-7 in the learned method's
        # 20/60 m output through its Gram-Schmidt gain, on an AVX2 CPU): one sample at a time
        return torch.cat(
            [gram_schmidt(*(t[i : i + 1] for t in (b10, b20, b60, guide_rgb))) for i in range(b10.shape[0])]
        )
    # ...and its vectorised reductions round differently with the data's alignment (a sample inside a batch,
    # or a numpy buffer, need not start on a 64-byte boundary: up to 6e-8 apart, a 1-DN flip in a COG now and
    # then): the statistics below always read fresh, aligned copies
    b10, b20, b60, guide_rgb = (
        t.clone(memory_format=torch.contiguous_format) for t in (b10, b20, b60, guide_rgb)
    )
    pan = guide_rgb.mean(dim=1, keepdim=True)
    weight = _measured_weight(b10)
    outs = []
    for x, group in zip((b10, b20, b60), BAND_GROUPS):
        f = group.factor_to_target
        ms = upsample(x, f)
        p_low = upsample(F.avg_pool2d(pan, f), f)
        intensity = ms.mean(dim=1, keepdim=True)
        dims = (1, 2, 3)
        scale = _std(intensity, dims, weight) / _std(p_low, dims, weight).clamp_min(1e-6)
        p_hist = (pan - _mean(p_low, dims, weight)) * scale + _mean(intensity, dims, weight)
        p_low_hist = (p_low - _mean(p_low, dims, weight)) * scale + _mean(intensity, dims, weight)
        pl = p_low_hist - _mean(p_low_hist, (2, 3), weight)
        msc = ms - _mean(ms, (2, 3), weight)
        gain = _mean(msc * pl, (2, 3), weight) / _mean(pl * pl, (2, 3), weight).clamp_min(1e-12)
        outs.append(ms + gain * (p_hist - p_low_hist))
    return torch.cat(outs, dim=1)[:, s2_order_index()]


def _measured_weight(b10: torch.Tensor) -> torch.Tensor | None:
    """(1,1,4H,4W) 0/1 weight of the 2.5 m pixels whose 10 m pixel is measured; None when every pixel is
    (the unweighted statistics, bit for bit as before) or too few are (then every pixel counts)."""
    mask = measured_mask(b10)
    if bool(mask.all()) or float(mask.sum()) < MIN_MASKED_PIXELS:
        return None
    return F.interpolate(mask, scale_factor=4, mode="nearest")


def _mean(x: torch.Tensor, dims: tuple[int, ...], weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over `dims` (keepdim), of the pixels `weight` counts (None: all, by torch's own mean)."""
    if weight is None:
        return x.mean(dim=dims, keepdim=True)
    w = weight.expand_as(x)
    return (x * w).sum(dim=dims, keepdim=True) / w.sum(dim=dims, keepdim=True)


def _std(x: torch.Tensor, dims: tuple[int, ...], weight: torch.Tensor | None) -> torch.Tensor:
    """Standard deviation over `dims` (keepdim); only a scale that cancels in the injection, so the
    weighted one need not be unbiased."""
    if weight is None:
        return x.std(dim=dims, keepdim=True)
    return _mean((x - _mean(x, dims, weight)) ** 2, dims, weight).sqrt()
