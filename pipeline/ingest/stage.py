"""Ingest one tile: read its window from every item, composite, write it into the work store, mark it done."""

from __future__ import annotations

from typing import Any

from pipeline.ingest.load import UnreadableAssetError, load_tile
from pipeline.io.grid import SceneGrid
from pipeline.io.work_store import DONE, EMPTY, WorkStore
from pipeline.tiling.grid import TileKey, TileLayout


def ingest_tile(
    items: list[dict[str, Any]],
    grid: SceneGrid,
    layout: TileLayout,
    key: TileKey,
    store: WorkStore,
    *,
    skip_bad_granules: bool = False,
) -> dict[str, Any]:
    """Load, composite and store one tile window; returns counts for the job summary.

    With `skip_bad_granules`, a granule with an unreadable asset is left out of the composite (and named in
    the returned "failed" map) instead of failing the tile.
    """
    failed: dict[str, str] = {}
    while True:
        try:
            data = load_tile(items, grid, layout, key)
            break
        except UnreadableAssetError as exc:
            if not skip_bad_granules or exc.item_id is None:
                raise
            failed[exc.item_id] = str(exc).split("; fix or remove")[0]
            items = [i for i in items if i["id"] != exc.item_id]
            if not items:
                data = None
                break
    if data is None or data.empty:
        store.mark("ingest", key, EMPTY)
        return {"tile": key.name, "empty": True, "failed": failed}
    store.write_tile(key, data.b10, data.b20, data.b60)
    store.mark("ingest", key, DONE)  # after the data: a crash before this line redoes the tile
    return {"tile": key.name, "empty": False, "failed": failed, "observations": data.observations}
