"""Per-band injection gains measured one scale coarser: does the network's detail help *this* band here?

A group network adds detail, learned from the RGB guide and the finer bands, to the smooth answer (the
bicubic upsampling of the group's own bands, back-projected onto them). Where a band's fine structure is
not the guide's (B09 water vapour, B01 aerosol over uniform land, snow, cloud), that detail is wrong and
the fused band loses to bicubic. The classical anchors (MTF-GLP with regression gains, adaptive
Gram-Schmidt) estimate the injection gain from the data at the coarser scale; here the whole fusion is run
one scale coarser on the scene itself (every input degraded by `r` with the sensor model), where the truth
is the measured band, and the least-squares gain of the network's correction over the smooth answer is
taken per image and band (scale invariance, as zero-shot pansharpening assumes):

    alpha = clip(<t - s, o - s> / <o - s, o - s>, 0, 1)

t: the measured band; o / s: the coarse-run fused / smooth estimates degraded onto the band's grid. The
fused band at full scale is then smooth + alpha * (fused - smooth): alpha 1 keeps the network, alpha 0 gives
the smooth, sensor-consistent answer. Both are back-projected, so the blend is too (the projection is linear).
Deterministic and per sample (batch-invariant); pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.models.sensor import backproject, upsample, wald_degrade

#: Below this energy of the network's correction (per pixel, reflectance^2) the gain is left at 1: there is
#: nothing to weigh, and the ratio would be noise.
MIN_CORRECTION_ENERGY = 1e-12


def smooth_estimate(lr: torch.Tensor, factor: int, iterations: int) -> torch.Tensor:
    """The smooth answer: bicubic upsampling of the measured bands, back-projected onto them."""
    return backproject(upsample(lr, factor, mode="bicubic"), lr, factor, iterations=iterations)


def pad_to_multiple(
    b10: torch.Tensor, b20: torch.Tensor, b60: torch.Tensor, guide: torch.Tensor, unit: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge-pad (bottom/right) the four fusion inputs so the 10 m sides are multiples of `unit` (of 6).

    The pads of the coarser grids and of the 4x finer guide follow from the 10 m pad (a multiple of 6).
    """
    h, w = b10.shape[-2:]
    ph, pw = -h % unit, -w % unit
    if not ph and not pw:
        return b10, b20, b60, guide

    def pad(x: torch.Tensor, k_num: int, k_den: int) -> torch.Tensor:
        return F.pad(x, (0, pw * k_num // k_den, 0, ph * k_num // k_den), mode="replicate")

    return pad(b10, 1, 1), pad(b20, 1, 2), pad(b60, 1, 6), pad(guide, 4, 1)


def least_squares_gain(
    truth: torch.Tensor, fused: torch.Tensor, smooth: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per sample and band, the gain in [0, 1] for which smooth + gain x (fused - smooth) best fits truth.

    Args:
        truth, fused, smooth: (B, C, h, w) on the same grid (the band's measured grid).
        weight: optional (B, 1, h, w) 0/1 mask of the pixels that count (see `pipeline.models.measured`).

    Returns:
        (B, C) float32 gains; 1 where the correction is (numerically) zero.
    """
    w = 1.0 if weight is None else weight.double()
    d = (fused - smooth).double()
    e = (truth - smooth).double()
    num = (e * d * w).sum((2, 3))
    den = (d * d * w).sum((2, 3))
    npx = d.shape[-2] * d.shape[-1]
    gain = torch.where(den > MIN_CORRECTION_ENERGY * npx, num / den.clamp_min(1e-300), torch.ones_like(den))
    return gain.clamp(0.0, 1.0).float()


def least_squares_gains2(
    truth: torch.Tensor,
    fused: torch.Tensor,
    other: torch.Tensor,
    smooth: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and band, gains (a, b) in [0, 1]^2 minimising ||truth - smooth - a d1 - b d2||^2.

    d1 = fused - smooth (the network's correction), d2 = other - smooth (a second detail estimate, the
    Gram-Schmidt one). Solved exactly on the box: the unconstrained optimum when it lies inside, else the
    best of the one-dimensional optima on the four edges.

    Returns:
        (a, b), each (B, C) float32; a correction with (numerically) no energy gets gain 0 unless both have
        none (then a = 1, b = 0: the network's output as it is).
    """
    w = 1.0 if weight is None else weight.double()
    d1 = (fused - smooth).double()
    d2 = (other - smooth).double()
    e = (truth - smooth).double()
    npx = d1.shape[-2] * d1.shape[-1]
    s11, s22, s12 = (d1 * d1 * w).sum((2, 3)), (d2 * d2 * w).sum((2, 3)), (d1 * d2 * w).sum((2, 3))
    e1, e2 = (e * d1 * w).sum((2, 3)), (e * d2 * w).sum((2, 3))
    tiny = MIN_CORRECTION_ENERGY * npx

    def opt1(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > tiny, num / den.clamp_min(1e-300), torch.zeros_like(den)).clamp(0, 1)

    det = s11 * s22 - s12 * s12
    ok = det > 1e-9 * s11 * s22 + tiny * tiny
    a0 = torch.where(ok, (e1 * s22 - e2 * s12) / det.clamp_min(1e-300), torch.full_like(det, -1.0))
    b0 = torch.where(ok, (e2 * s11 - e1 * s12) / det.clamp_min(1e-300), torch.full_like(det, -1.0))
    cands = [(a0, b0)]
    for v in (0.0, 1.0):
        vv = torch.full_like(det, v)
        cands.append((opt1(e1 - vv * s12, s11), vv))
        cands.append((vv, opt1(e2 - vv * s12, s22)))
    a_all = torch.stack([c[0] for c in cands], -1)
    b_all = torch.stack([c[1] for c in cands], -1)
    inside = (a_all >= 0) & (a_all <= 1) & (b_all >= 0) & (b_all <= 1)
    cost = _cost_all(a_all, b_all, e1, e2, s11, s22, s12)
    costs = torch.where(inside, cost, torch.full_like(cost, float("inf")))
    best = costs.argmin(-1, keepdim=True)
    a = a_all.gather(-1, best)[..., 0]
    b = b_all.gather(-1, best)[..., 0]
    none = (s11 <= tiny) & (s22 <= tiny)
    a = torch.where(none, torch.ones_like(a), a)
    b = torch.where(none, torch.zeros_like(b), b)
    return a.float(), b.float()


def _cost_all(a, b, e1, e2, s11, s22, s12):
    """The least-squares cost (up to a constant) of gains a, b (..., K) given the Gram sums (...)."""
    e1, e2, s11, s22, s12 = (t[..., None] for t in (e1, e2, s11, s22, s12))
    return -2 * a * e1 - 2 * b * e2 + a * a * s11 + 2 * a * b * s12 + b * b * s22


def coarse_gain(
    fused_c: torch.Tensor,
    smooth_c: torch.Tensor,
    truth: torch.Tensor,
    down: int,
    other_c: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gains from the coarse run: its outputs degraded by `down` onto the measured grid, cropped to `truth`.

    Args:
        fused_c, smooth_c: (B, C, H', W') the coarse run's fused and smooth outputs (padded inputs allowed).
        truth: (B, C, h, w) the measured bands (h <= H' / down).
        down: sensor-model factor from the coarse output grid to the measured grid.
        other_c: optional second detail estimate of the coarse run (Gram-Schmidt), fitted jointly.
        weight: optional (B, 1, h, w) 0/1 mask of the measured pixels of `truth`'s grid.

    Returns:
        (B, C) gains of the network's correction, or (B, C, 2) gains (network, other) with `other_c`.
    """
    h, w = truth.shape[-2:]
    o = wald_degrade(fused_c, down)[..., :h, :w]
    s = wald_degrade(smooth_c, down)[..., :h, :w]
    if other_c is None:
        return least_squares_gain(truth, o, s, weight)
    g = wald_degrade(other_c, down)[..., :h, :w]
    return torch.stack(least_squares_gains2(truth, o, g, s, weight), -1)
