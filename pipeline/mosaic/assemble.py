"""Assemble one tile core of the mosaic: blend the overlapping predictions, write the core, mark it."""

from __future__ import annotations

import numpy as np

from pipeline.io.mosaic_store import write_core
from pipeline.io.work_store import DONE, EMPTY, WorkStore
from pipeline.tiling.blend import blend_core
from pipeline.tiling.grid import TileKey, TileLayout


def assemble_core(store: WorkStore, mosaic_url: str, layout: TileLayout, key: TileKey) -> int:
    """Blend and write one core; returns the number of valid output pixels (band 0... any band)."""
    infer = store.status("infer")
    ingest = store.status("ingest")

    def load(nb: TileKey) -> np.ndarray | None:
        if ingest[nb.row, nb.col] == EMPTY or infer[nb.row, nb.col] != DONE:
            return None
        return store.read_prediction(nb)

    block = blend_core(layout, key, load, channels=12)
    write_core(mosaic_url, layout, key, block)
    store.mark("mosaic", key, DONE)
    return int(np.isfinite(block).any(axis=0).sum())
