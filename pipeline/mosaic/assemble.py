"""Assemble one tile core of the mosaic: blend the overlapping predictions, write the core and its overview
pixels, mark it. Reads only the markers and predictions of the tile's own 3 x 3 neighbourhood. With
`--uncertainty` the spread is blended the same way (the same ramps, so a core's spread is the weighted mean
of its neighbours' spreads where tiles overlap) and written as the mosaic's `uncertainty` variable."""

from __future__ import annotations

import numpy as np

from pipeline.bands import RGB_BANDS, S2_BANDS
from pipeline.io.mosaic_store import UNCERTAINTY, write_core
from pipeline.io.work_store import DONE, EMPTY, WorkStore
from pipeline.tiling.blend import blend_core
from pipeline.tiling.grid import TileKey, TileLayout


def assemble_core(
    store: WorkStore, mosaic_url: str, layout: TileLayout, key: TileKey, *, spread: bool = False
) -> int:
    """Blend and write one core (and its spread when `spread`); returns the number of valid output pixels."""
    rows = slice(max(key.row - 1, 0), key.row + 2)
    cols = slice(max(key.col - 1, 0), key.col + 2)
    infer = store.status_window("infer", rows, cols)
    ingest = store.status_window("ingest", rows, cols)

    def predicted(nb: TileKey) -> bool:
        r, c = nb.row - rows.start, nb.col - cols.start
        return ingest[r, c] != EMPTY and infer[r, c] == DONE

    block = blend_core(
        layout, key, lambda nb: store.read_prediction(nb) if predicted(nb) else None, channels=12
    )
    if spread:  # before the product's core: the mosaic marker below covers both
        spread_block = blend_core(
            layout, key, lambda nb: store.read_spread(nb) if predicted(nb) else None, channels=12
        )
        write_core(mosaic_url, layout, key, spread_block, variable=UNCERTAINTY)
    write_core(mosaic_url, layout, key, block)
    store.write_overview(key, layout, block[[S2_BANDS.index(b) for b in RGB_BANDS]])
    store.mark("mosaic", key, DONE)
    return int(np.isfinite(block).any(axis=0).sum())
