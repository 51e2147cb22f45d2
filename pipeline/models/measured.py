"""Which pixels of a tile are measured, and which are nearest-neighbour copies of filled nodata.

The pipeline fills nodata (and a tile's window outside the scene) with the nearest valid pixel before a
method sees it (`pipeline.inference.predict.fill_nodata`), so that networks get plausible context. Statistics
fitted on the tile itself (the fusion's injection gains, Gram-Schmidt's injection regression) must not count
those copies: they repeat the edge pixels and weigh the fit towards them. Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Fewest measured (not filled) pixels, per image and band grid, for the mask to be used; else all count.
MIN_MASKED_PIXELS = 4


def measured_mask(b10: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float 0/1: 10 m pixels that are not a copy of a 4-neighbour in all four 10 m bands.

    Such copies have no detail of their own: scored as truth they drag the injection gains towards the smooth
    answer, and in Gram-Schmidt's regression they weigh the edge pixels. Four independent reflectances equal
    to a neighbour's to the last bit do not occur in measured imagery except in saturated or constant areas,
    which carry no detail to weigh either.
    """
    x = b10
    same = torch.zeros_like(x[:, :1], dtype=torch.bool)
    eq_v = (x[..., 1:, :] == x[..., :-1, :]).all(1, keepdim=True)
    eq_h = (x[..., :, 1:] == x[..., :, :-1]).all(1, keepdim=True)
    same[..., 1:, :] |= eq_v
    same[..., :-1, :] |= eq_v
    same[..., :, 1:] |= eq_h
    same[..., :, :-1] |= eq_h
    return (~same).to(x.dtype)


def mask_on_grid(mask10: torch.Tensor, k: int, shape: tuple[int, int]) -> torch.Tensor | None:
    """The 10 m mask on a grid k times coarser (a pixel counts when all its 10 m pixels do), cropped to
    `shape`; None when fewer than MIN_MASKED_PIXELS pixels of some image count (then all pixels count)."""
    m = F.avg_pool2d(mask10, k) if k > 1 else mask10
    m = (m[..., : shape[0], : shape[1]] > 1 - 1e-6).to(mask10.dtype)
    if (m.sum((1, 2, 3)) < MIN_MASKED_PIXELS).any():
        return None
    return m
