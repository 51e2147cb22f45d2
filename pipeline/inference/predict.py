"""Tile prediction: numpy band groups with NaN nodata in, 12 bands at 2.5 m with nodata carried through out.

Nodata handling: inside a tile, NaN pixels are filled with the nearest valid pixel of the same group (so the
networks see plausible context, not zeros), and every output band is NaN wherever its own native pixel was
NaN. A group with no valid pixel at all gives NaN bands.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from pipeline.bands import BAND_GROUPS, S2_BANDS
from pipeline.inference.methods import SuperResolver


def fill_nodata(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaNs of a (C,h,w) group with the nearest pixel valid in all bands.

    Returns:
        (filled array with no NaN, valid mask (C,h,w) bool of the original values).
    """
    valid = np.isfinite(group)
    all_valid = valid.all(axis=0)
    if all_valid.all():
        return group.astype(np.float32, copy=False), valid
    if not all_valid.any():
        return np.zeros_like(group, dtype=np.float32), valid
    _, (iy, ix) = ndimage.distance_transform_edt(~all_valid, return_indices=True)
    return group[:, iy, ix].astype(np.float32), valid


def output_mask(valids: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(12, 4H, 4W) bool: an output pixel is valid where its band's native pixel was valid."""
    per_band = {}
    for valid, group in zip(valids, BAND_GROUPS):
        f = group.factor_to_target
        for i, band in enumerate(group.bands):
            per_band[band] = np.repeat(np.repeat(valid[i], f, axis=0), f, axis=1)
    return np.stack([per_band[b] for b in S2_BANDS])


def predict_tiles(
    method: SuperResolver,
    b10: np.ndarray,
    b20: np.ndarray,
    b60: np.ndarray,
    *,
    seeds: Sequence[int],
) -> np.ndarray:
    """Super-resolve a batch of tiles in one forward pass of each network, each tile with its own generator.

    Each tile's noise is drawn from its own generator, seeded with its own seed (`tiling.grid.tile_seed`),
    and the networks are batch-invariant (`pipeline.models.batching`), so a tile's pixels do not depend on the
    other tiles of the batch, on the batch size or on the order (tests/inference/test_batching.py).

    Args:
        method: a SuperResolver.
        b10: (N,4,H,W) float32 reflectance, NaN = nodata; H, W multiples of 6.
        b20: (N,6,H/2,W/2).
        b60: (N,2,H/6,W/6).
        seeds: N seeds, one per tile (its position on the grid, see `tile_seed`).

    Returns:
        (N,12,4H,4W) float32 in S2 order, NaN = nodata.
    """
    if len(seeds) != b10.shape[0]:
        raise ValueError(f"predict_tiles: {len(seeds)} seeds for {b10.shape[0]} tiles")
    filled = [[fill_nodata(x[n]) for x in (b10, b20, b60)] for n in range(len(seeds))]
    # np.stack copies: the tensors never alias the caller's arrays
    tensors = [torch.from_numpy(np.stack([tile[g][0] for tile in filled])) for g in range(3)]
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    with torch.inference_mode():
        preds = method(*tensors, generators=generators).float().cpu().numpy()
    for pred, tile in zip(preds, filled):
        pred[~output_mask(tuple(valid for _, valid in tile))] = np.nan  # type: ignore[arg-type]
    return preds
