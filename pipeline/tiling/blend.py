"""Blending of overlapping tile predictions into seamless output. Pure numpy.

Each tile's prediction is weighted by a separable ramp that rises linearly across the 2*halo-wide band in
which neighbouring windows overlap; in every overlap the two ramps sum to one, so a pixel's value moves
smoothly from one tile's prediction to the next and no step appears at tile borders. Weights never reach
zero, so pixels covered by a single window (scene borders) keep that window's prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.tiling.grid import SR_FACTOR, TileKey, TileLayout, valid_in_core


def ramp_1d(window: int, overlap: int) -> np.ndarray:
    """Weights along one axis of a `window`-pixel window whose ends overlap neighbours by `overlap` pixels."""
    i = np.arange(window, dtype=np.float64) + 0.5
    if overlap <= 0:
        return np.ones(window, dtype=np.float32)
    return np.clip(np.minimum(i, window - i) / overlap, 1e-3, 1.0).astype(np.float32)


def tile_weights(layout: TileLayout, factor: int = SR_FACTOR) -> np.ndarray:
    """(window*factor, window*factor) blend weights of one tile's prediction."""
    w = ramp_1d(layout.window * factor, 2 * layout.halo * factor)
    return np.outer(w, w)


def blend_core(
    layout: TileLayout,
    key: TileKey,
    load_prediction: Callable[[TileKey], np.ndarray | None],
    *,
    channels: int,
    factor: int = SR_FACTOR,
) -> np.ndarray:
    """Blend the predictions that cover one tile's core.

    Args:
        layout: the tile layout.
        key: the tile whose core is produced.
        load_prediction: returns a neighbour's prediction (C, window*f, window*f) float32, NaN = nodata,
            or None when that tile has no data at all.
        channels: C, the number of bands (used when no neighbour has data).
        factor: output pixels per 10 m pixel.

    Returns:
        (C, core_h*f, core_w*f) float32, NaN where no tile has a valid value and outside the layout's
        valid region.
    """
    y0, y1, x0, x1 = layout.core_bounds(key)
    oy0, oy1, ox0, ox1 = y0 * factor, y1 * factor, x0 * factor, x1 * factor
    weights = tile_weights(layout, factor)
    acc: np.ndarray | None = None
    wsum: np.ndarray | None = None
    for nb in layout.neighbours(key):
        pred = load_prediction(nb)
        if pred is None:
            continue
        wy0, wx0 = (v * factor for v in layout.window_origin(nb))
        # Intersection of the neighbour's window with this core, in output pixels.
        iy0, iy1 = max(oy0, wy0), min(oy1, wy0 + pred.shape[-2])
        ix0, ix1 = max(ox0, wx0), min(ox1, wx0 + pred.shape[-1])
        if iy0 >= iy1 or ix0 >= ix1:
            continue
        part = pred[:, iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0]
        w = np.where(np.isfinite(part), weights[iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0], 0.0)
        if acc is None:
            acc = np.zeros((pred.shape[0], oy1 - oy0, ox1 - ox0), np.float64)
            wsum = np.zeros_like(acc)
        sl = (slice(None), slice(iy0 - oy0, iy1 - oy0), slice(ix0 - ox0, ix1 - ox0))
        acc[sl] += np.nan_to_num(part) * w
        wsum[sl] += w  # type: ignore[index]
    if acc is None:
        return np.full((channels, oy1 - oy0, ox1 - ox0), np.nan, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (acc / wsum).astype(np.float32)
    out[wsum == 0] = np.nan  # type: ignore[operator]
    inside = valid_in_core(layout, key)
    if inside is not None:  # past the product's edge the neighbours beyond are missing: not the product
        y0, y1, x0, x1 = (v * factor for v in inside)
        keep = np.zeros(out.shape[1:], bool)
        keep[y0:y1, x0:x1] = True
        out[:, ~keep] = np.nan
    return out
