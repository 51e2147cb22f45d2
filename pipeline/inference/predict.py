"""Tile prediction: numpy band groups with NaN nodata in, 12 bands at 2.5 m with nodata carried through out.

Nodata handling: inside a tile, NaN pixels are filled with the nearest valid pixel of the same group (so the
networks see plausible context, not zeros), and every output band is NaN wherever its own native pixel was
NaN. A group with no valid pixel at all gives NaN bands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pipeline.bands import BAND_GROUPS, S2_BANDS
from pipeline.inference.methods import SuperResolver
from pipeline.inference.quality import tile_quality


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


def draw_seed(seed: int, draw: int) -> int:
    """The seed of draw `draw` of a tile whose seed is `seed` (`tile_seed`): draw 0 is the tile's own seed
    (so the first draw is what a run without --uncertainty gives), draw k > 0 a 32-bit seed derived from
    (seed, k) by NumPy's SeedSequence, which does not collide with a neighbour tile's seed + k."""
    if draw == 0:
        return seed
    return int(np.random.SeedSequence(seed, spawn_key=(draw,)).generate_state(1, np.uint32)[0])


@dataclass
class TilePredictions:
    """What `predict_tiles_full` returns for N tiles.

    Attributes:
        product: (N,12,4H,4W) float32, S2 order, NaN = nodata: the prediction, or the mean of the draws.
        spread: (N,12,4H,4W) float32 per-pixel std over the draws (population std), NaN = nodata; None with
            one draw.
        quality: (N, len(QUALITY_COLUMNS)) float32 per-tile figures (`inference.quality`); None unless
            `cores` was given.
    """

    product: np.ndarray
    spread: np.ndarray | None = None
    quality: np.ndarray | None = None


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
    return predict_tiles_full(method, b10, b20, b60, seeds=seeds).product


def predict_tiles_full(
    method: SuperResolver,
    b10: np.ndarray,
    b20: np.ndarray,
    b60: np.ndarray,
    *,
    seeds: Sequence[int],
    draws: int = 1,
    max_batch: int | None = None,
    cores: Sequence[tuple[int, int, int, int]] | None = None,
) -> TilePredictions:
    """`predict_tiles` with `draws` samples per tile, their spread, and the per-tile quality figures.

    The N x `draws` samples go through the networks together, `max_batch` at a time (None: all in one
    forward pass of each network); sample k of tile n draws its noise from `draw_seed(seeds[n], k)`. The
    networks are batch-invariant, so every sample, and hence the mean and the spread, is the same whatever
    `max_batch`, the number of tiles N or their order. The mean and std over the draws are float64 sums in
    draw order, cast to float32.

    Args:
        draws: K >= 1 samples per tile; the product is their mean, `spread` their std (K >= 2).
        max_batch: most samples per forward pass (memory); None = N x K.
        cores: per tile, (y0, y1, x0, x1) of its core in the window (10 m px): compute `quality` there.
    """
    n_tiles = b10.shape[0]
    if len(seeds) != n_tiles:
        raise ValueError(f"predict_tiles: {len(seeds)} seeds for {n_tiles} tiles")
    if draws < 1:
        raise ValueError(f"predict_tiles: draws must be >= 1, got {draws}")
    filled = [[fill_nodata(x[n]) for x in (b10, b20, b60)] for n in range(n_tiles)]
    samples = [(n, k) for n in range(n_tiles) for k in range(draws)]  # tile-major
    step = len(samples) if max_batch is None else max(1, max_batch)
    raw: np.ndarray | None = None
    with torch.inference_mode():
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step]
            # np.stack copies: the tensors never alias the caller's arrays
            tensors = [torch.from_numpy(np.stack([filled[n][g][0] for n, _ in chunk])) for g in range(3)]
            generators = [torch.Generator(device="cpu").manual_seed(draw_seed(seeds[n], k)) for n, k in chunk]
            out = method(*tensors, generators=generators).float().cpu().numpy()
            if raw is None:
                raw = np.empty((n_tiles, draws, *out.shape[1:]), np.float32)
            for (n, k), sample in zip(chunk, out):
                raw[n, k] = sample
    assert raw is not None
    if draws == 1:
        product, spread = raw[:, 0], None
    else:
        product = np.empty(raw.shape[:1] + raw.shape[2:], np.float32)
        spread = np.empty_like(product)
        for n in range(n_tiles):  # per tile: the same float64 reduction whatever N
            d = raw[n].astype(np.float64)
            mean = d.sum(axis=0) / draws
            product[n] = mean
            spread[n] = np.sqrt(((d - mean) ** 2).sum(axis=0) / draws)
    del raw
    quality = None
    for n, tile in enumerate(filled):
        nodata = ~output_mask(tuple(valid for _, valid in tile))  # type: ignore[arg-type]
        product[n][nodata] = np.nan
        if spread is not None:
            spread[n][nodata] = np.nan
    if cores is not None:
        quality = np.stack(
            [
                tile_quality(
                    product[n],
                    (b10[n], b20[n], b60[n]),
                    cores[n],
                    spread=None if spread is None else spread[n],
                )
                for n in range(n_tiles)
            ]
        )
    return TilePredictions(product=product, spread=spread, quality=quality)
