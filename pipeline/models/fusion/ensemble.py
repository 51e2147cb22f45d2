"""Geometric self-ensemble of a group network: the mean of its predictions over flips and rotations.

A group net is a convolution stack, so it is nearly but not exactly equivariant to the dihedral group of the
pixel grid: each orientation of the same inputs gives a slightly different answer, and their mean usually
has a lower error (the x8 self-ensemble of EDSR, Lim et al. 2017; measured here: docs/fusion.md). Everything
around the networks (bicubic upsampling by an integer factor, the sensor model's symmetric blur and block
means, the injection gains' sums) is equivariant already, so with the whole group the ensembled fusion is
equivariant too, except for the edge padding the injection gains add where a side is not a whole number of
coarse pixels.

The first four transforms keep each image's height and width (identity, flips, 180-degree turn); the last four
transpose it, so a non-square tile runs them with its sides swapped (the networks are fully convolutional).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.models.fusion.config import ENSEMBLE_SIZES

#: (quarter turns, mirror left-right first) of the dihedral group, shape-keeping ones first.
DIHEDRAL: tuple[tuple[int, bool], ...] = (
    (0, False),
    (0, True),
    (2, True),
    (2, False),
    (1, False),
    (1, True),
    (3, False),
    (3, True),
)


def _forward(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    if mirror:
        x = x.flip(-1)
    return torch.rot90(x, turns, (-2, -1)) if turns else x


def _inverse(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    if turns:
        x = torch.rot90(x, -turns, (-2, -1))
    return x.flip(-1) if mirror else x


def dihedral_mean(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ms: torch.Tensor,
    guide: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Mean of `net(T ms, T guide)` mapped back by T^-1 over the first `size` transforms of `DIHEDRAL`.

    One forward pass per transform (not stacked into the batch): the memory of a pass stays that of one, and
    each sample's result does not depend on what else is in the batch. Summed in float32.
    """
    if size not in ENSEMBLE_SIZES:
        raise ValueError(f"self-ensemble size must be one of {ENSEMBLE_SIZES}, got {size}")
    total: torch.Tensor | None = None
    for turns, mirror in DIHEDRAL[:size]:
        out = net(_forward(ms, turns, mirror), _forward(guide, turns, mirror))
        pred = _inverse(out, turns, mirror).float()
        total = pred if total is None else total + pred
    assert total is not None
    return total / size
