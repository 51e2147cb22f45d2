"""Assemble one tile core of the mosaic: blend the overlapping predictions, write the core and its overview
pixels, mark it. Reads only the markers and predictions of the tile's own 3 x 3 neighbourhood."""

from __future__ import annotations

import numpy as np

from pipeline.bands import RGB_BANDS, S2_BANDS
from pipeline.io.mosaic_store import write_core
from pipeline.io.work_store import DONE, EMPTY, WorkStore
from pipeline.tiling.blend import blend_core
from pipeline.tiling.grid import TileKey, TileLayout


def assemble_core(store: WorkStore, mosaic_url: str, layout: TileLayout, key: TileKey) -> int:
    """Blend and write one core; returns the number of valid output pixels (band 0... any band)."""
    rows = slice(max(key.row - 1, 0), key.row + 2)
    cols = slice(max(key.col - 1, 0), key.col + 2)
    infer = store.status_window("infer", rows, cols)
    ingest = store.status_window("ingest", rows, cols)

    def load(nb: TileKey) -> np.ndarray | None:
        r, c = nb.row - rows.start, nb.col - cols.start
        if ingest[r, c] == EMPTY or infer[r, c] != DONE:
            return None
        return store.read_prediction(nb)

    block = blend_core(layout, key, load, channels=12)
    write_core(mosaic_url, layout, key, block)
    store.write_overview(key, layout, block[[S2_BANDS.index(b) for b in RGB_BANDS]])
    store.mark("mosaic", key, DONE)
    return int(np.isfinite(block).any(axis=0).sum())
