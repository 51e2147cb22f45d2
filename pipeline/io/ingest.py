"""Ingest one tile: read its window from every item, composite, write it into the work store, mark it done."""

from __future__ import annotations

from typing import Any

from pipeline.io.grid import SceneGrid
from pipeline.io.load import load_tile
from pipeline.io.work_store import DONE, EMPTY, WorkStore
from pipeline.tiling.grid import TileKey, TileLayout


def ingest_tile(
    items: list[dict[str, Any]],
    grid: SceneGrid,
    layout: TileLayout,
    key: TileKey,
    store: WorkStore,
    *,
    errors_as_nodata: bool = False,
) -> dict[str, Any]:
    """Load, composite and store one tile window; returns counts for the job summary."""
    data = load_tile(items, grid, layout, key, errors_as_nodata=errors_as_nodata)
    if data.empty:
        store.mark("ingest", key, EMPTY)
        return {"tile": key.name, "empty": True, "observations": data.observations}
    store.write_tile(key, data.b10, data.b20, data.b60)
    store.mark("ingest", key, DONE)  # after the data: a crash before this line redoes the tile
    return {"tile": key.name, "empty": False, "observations": data.observations}
