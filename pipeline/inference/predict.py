"""Tile prediction: numpy band groups with NaN nodata in, 12 bands at 2.5 m with nodata carried through out.

Nodata handling: inside a tile, NaN pixels are filled with the nearest valid pixel of the same group (so the
networks see plausible context, not zeros), and every output band is NaN wherever its own native pixel was
NaN. A group with no valid pixel at all gives NaN bands.
"""

from __future__ import annotations

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
    seed: int = 0,
) -> np.ndarray:
    """Super-resolve a batch of tiles.

    Args:
        method: a SuperResolver.
        b10: (N,4,H,W) float32 reflectance, NaN = nodata; H, W multiples of 6.
        b20: (N,6,H/2,W/2).
        b60: (N,2,H/6,W/6).
        seed: seeds the method's generator, so a tile reproduces exactly.

    Returns:
        (N,12,4H,4W) float32 in S2 order, NaN = nodata.
    """
    filled, masks = [], []
    for n in range(b10.shape[0]):
        groups = [fill_nodata(x[n]) for x in (b10, b20, b60)]
        filled.append([g for g, _ in groups])
        masks.append(output_mask(tuple(v for _, v in groups)))  # type: ignore[arg-type]
    tensors = [torch.from_numpy(np.stack([f[i] for f in filled])) for i in range(3)]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.inference_mode():
        out = method(*tensors, generator=generator).float().cpu().numpy()
    out[~np.stack(masks)] = np.nan
    return out
