"""Super-resolve a whole in-memory scene in one process: tile, predict, blend.

This is what `difffusr superres` and the evaluation use; `difffusr run` distributes the same steps
(tiling.grid, inference.predict, tiling.blend) over Ray workers and Zarr stores. Both seed each tile by
its position on the grid (`tiling.grid.tile_seed`), so on the same tile grid they give the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.bands import BAND_GROUPS
from pipeline.errors import DataError
from pipeline.inference.methods import MethodOptions, SuperResolver, get_method
from pipeline.inference.predict import predict_tiles_full
from pipeline.tiling.blend import blend_core
from pipeline.tiling.grid import (
    DEFAULT_CORE,
    DEFAULT_HALO,
    SR_FACTOR,
    TileKey,
    TileLayout,
    round_up,
    tile_seed,
)


def tile_windows(
    layout: TileLayout, groups: tuple[np.ndarray, np.ndarray, np.ndarray], key: TileKey
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut one tile's window from each group array, NaN where the window leaves the scene."""
    y0, x0 = layout.window_origin(key)
    out = []
    for arr, group in zip(groups, BAND_GROUPS):
        k = group.factor_to_10m
        size = layout.window // k
        gy0, gx0 = y0 // k, x0 // k
        win = np.full((arr.shape[0], size, size), np.nan, np.float32)
        sy0, sy1 = max(gy0, 0), min(gy0 + size, arr.shape[1])
        sx0, sx1 = max(gx0, 0), min(gx0 + size, arr.shape[2])
        if sy0 < sy1 and sx0 < sx1:
            win[:, sy0 - gy0 : sy1 - gy0, sx0 - gx0 : sx1 - gx0] = arr[:, sy0:sy1, sx0:sx1]
        out.append(win)
    return out[0], out[1], out[2]


def check_groups(b10: np.ndarray, b20: np.ndarray, b60: np.ndarray) -> None:
    """Raise DataError unless the three groups nest as 1:2:6 with H, W multiples of 6."""
    h, w = b10.shape[-2:]
    for arr, group, nbands in zip((b10, b20, b60), BAND_GROUPS, (4, 6, 2)):
        k = group.factor_to_10m
        if arr.ndim != 3 or arr.shape[0] != nbands or arr.shape[1] * k != h or arr.shape[2] * k != w:
            raise DataError(
                f"the {group.name} group has shape {arr.shape}, expected ({nbands}, {h // k}, {w // k}) "
                f"for a 10 m grid of {h}x{w}; the bands must share one footprint with 1:2:6 pixel ratios"
            )


def super_resolve_scene(
    b10: np.ndarray,
    b20: np.ndarray,
    b60: np.ndarray,
    method: str | SuperResolver,
    *,
    seed: int = 0,
    core: int = DEFAULT_CORE,
    halo: int = DEFAULT_HALO,
    batch_size: int = 4,
    options: MethodOptions | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Super-resolve one scene's 12 bands to 4x the 10 m grid (`super_resolve_scene_full`'s product)."""
    return super_resolve_scene_full(
        b10,
        b20,
        b60,
        method,
        seed=seed,
        core=core,
        halo=halo,
        batch_size=batch_size,
        options=options,
        on_tile=on_tile,
    )[0]


def super_resolve_scene_full(
    b10: np.ndarray,
    b20: np.ndarray,
    b60: np.ndarray,
    method: str | SuperResolver,
    *,
    seed: int = 0,
    core: int = DEFAULT_CORE,
    halo: int = DEFAULT_HALO,
    batch_size: int = 4,
    options: MethodOptions | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Super-resolve one scene's 12 bands to 4x the 10 m grid, with `options.uncertainty` draws per tile.

    Args:
        b10: (4,H,W) float32 reflectance B02 B03 B04 B08, NaN = nodata; H, W multiples of 6.
        b20: (6,H/2,W/2) B05 B06 B07 B8A B11 B12.
        b60: (2,H/6,W/6) B01 B09.
        method: a method name ("difffusr", "gs", "bicubic") or a SuperResolver.
        seed: the job's seed; each tile's generator is seeded by `tile_seed(seed, key, layout)`, its
            position on the tile grid, as in `difffusr run`: a tile's pixels depend only on (inputs,
            weights, seed, tile position), never on `batch_size` or order.
        core, halo: tile core and halo, 10 m pixels (multiples of 6); shrunk for small scenes.
        batch_size: tiles cut and handed to `predict_tiles` at once, and the most samples (tiles x draws) per
            forward pass (memory and progress granularity only).
        options: options of the learned method.
        on_tile: progress callback (done, total).

    Returns:
        (product, spread): (12,4H,4W) float32 in S2 order, NaN = nodata; the product is the mean of the
        draws, spread their per-pixel std blended like the product (None with one draw).
    """
    check_groups(b10, b20, b60)
    draws = max(1, options.uncertainty) if options is not None else 1
    h, w = b10.shape[-2:]
    core = min(core, round_up(max(h, w)))
    halo = min(halo, (core // 2) // 6 * 6)
    layout = TileLayout(height=h, width=w, core=core, halo=halo)
    solver = get_method(method, options) if isinstance(method, str) else method
    keys = layout.tile_keys()
    predictions: dict[TileKey, np.ndarray | None] = {}
    spreads: dict[TileKey, np.ndarray | None] = {}
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        windows = [tile_windows(layout, (b10, b20, b60), k) for k in chunk]
        live = [i for i, win in enumerate(windows) if any(np.isfinite(g).any() for g in win)]
        predictions.update(dict.fromkeys(chunk))
        spreads.update(dict.fromkeys(chunk))
        if live:
            stacked = [np.stack([windows[i][g] for i in live]) for g in range(3)]
            seeds = [tile_seed(seed, chunk[i], layout) for i in live]
            preds = predict_tiles_full(solver, *stacked, seeds=seeds, draws=draws, max_batch=batch_size)
            for j, i in enumerate(live):
                predictions[chunk[i]] = preds.product[j]
                if preds.spread is not None:
                    spreads[chunk[i]] = preds.spread[j]
        if on_tile:
            on_tile(min(start + batch_size, len(keys)), len(keys))
    out = np.full((12, h * SR_FACTOR, w * SR_FACTOR), np.nan, np.float32)
    spread = np.full_like(out, np.nan) if draws > 1 else None
    for key in keys:
        y0, y1, x0, x1 = layout.core_bounds(key)
        region = (slice(None), slice(y0 * SR_FACTOR, y1 * SR_FACTOR), slice(x0 * SR_FACTOR, x1 * SR_FACTOR))
        out[region] = blend_core(layout, key, predictions.get, channels=12)
        if spread is not None:
            spread[region] = blend_core(layout, key, spreads.get, channels=12)
    return out, spread
