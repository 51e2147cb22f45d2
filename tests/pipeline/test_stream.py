"""The streaming engine's scheduling rules, on a real work store with calls that finish at once (no Ray):
a core is blended only after every neighbour that covers it is predicted, no more than the window of tiles is
ever open, a tile row is exported only once all its cores are final, and work chunks are freed only when no
core still needs them."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bookkeeping import _Actor, _Instant
from pipeline.io.cog import strip_tile_rows
from pipeline.io.work_store import DONE, EMPTY, WorkStore
from pipeline.stream import StreamTasks, TileStream, stream_window
from pipeline.tiling.grid import TileKey, TileLayout


class _SpyStore(WorkStore):
    """A real WorkStore that also records which chunks the stream frees."""

    def __init__(self, url: str, log: list) -> None:
        super().__init__(url)
        self.log = log

    def free_inputs(self, key: TileKey) -> None:
        super().free_inputs(key)
        self.log.append(("free_inputs", key))

    def free_prediction(self, key: TileKey) -> None:
        super().free_prediction(key)
        self.log.append(("free_prediction", key))


def _run(tmp_path, layout: TileLayout, *, empty=frozenset(), window=None, free_work=True, batch=3):
    log: list[tuple[str, object]] = []
    store = _SpyStore(str(tmp_path / "work.zarr"), log)
    store.create(layout, "test")
    calls = _Instant()

    def ingest(k: TileKey):
        log.append(("ingest", k))
        return calls.submit(({"empty": (k.row, k.col) in empty, "failed": {}}, 0.0, 0.0))

    def mosaic(k: TileKey):
        log.append(("mosaic", k))
        return calls.submit((0, 0.0, 0.0))

    def strip(g: int):
        log.append(("strip", g))
        return calls.submit((g, 0.0, 0.0))

    actor = _Actor(calls)
    run_batch = actor.run.remote

    def infer(keys, lay, work_store=None):
        log.extend(("infer", k) for k in keys)
        return run_batch(keys, lay, work_store)

    actor.run.remote = infer
    tasks = StreamTasks(
        ingest=ingest,
        mosaic=mosaic,
        actors=[actor],
        get=calls.get,
        wait=calls.wait,
        strip=strip,
        strip_rows=strip_tile_rows(layout),
    )
    stream = TileStream(
        layout,
        store,
        tasks,
        batch_tiles=batch,
        window=window or stream_window(layout, batch, 1, cpus=2),
        max_tasks=4,
        free_work=free_work,
        progress=False,
    )
    return stream.run(), log, store


def test_cores_are_blended_only_after_their_neighbours_are_predicted(tmp_path):
    layout = TileLayout(height=6 * 96, width=5 * 96)
    result, log, _ = _run(tmp_path, layout)
    position = {entry: i for i, entry in enumerate(log)}
    keys = layout.tile_keys()
    assert {k for stage, k in log if stage == "mosaic"} == set(keys)
    for k in keys:
        for nb in layout.neighbours(k):
            assert position[("infer", nb)] < position[("mosaic", k)], (k, nb)
    assert result.stages["inference"]["tiles"] == len(keys) and result.stages["mosaic"]["tiles"] == len(keys)


def test_no_more_than_the_window_of_tiles_is_ever_open(tmp_path):
    layout = TileLayout(height=8 * 96, width=6 * 96)
    window = 2 * layout.cols + 2  # the smallest window that cannot stall
    result, log, _ = _run(tmp_path, layout, window=window, batch=1)
    assert result.peak_open_tiles <= window
    # the stream did not wait for the last ingest before the first blend
    first_mosaic = next(i for i, (stage, _) in enumerate(log) if stage == "mosaic")
    last_ingest = max(i for i, (stage, _) in enumerate(log) if stage == "ingest")
    assert first_mosaic < last_ingest


def test_a_strip_is_exported_once_all_its_cores_are_final_and_empty_tiles_need_no_model(tmp_path):
    layout = TileLayout(height=4 * 96, width=4 * 96)
    empty = {(1, 1), (1, 2), (3, 0)}
    result, log, _ = _run(tmp_path, layout, empty=empty)
    position = {entry: i for i, entry in enumerate(log)}
    strip_rows = strip_tile_rows(layout)
    assert len(strip_rows) == 2 and set(strip_rows[0]) & set(strip_rows[1])  # a tile row in both strips
    assert [stage for stage, _ in log].count("strip") == len(strip_rows)
    for g, rows in enumerate(strip_rows):
        for row in rows:
            for col in range(layout.cols):
                if (row, col) not in empty:
                    assert position[("mosaic", TileKey(row=row, col=col))] < position[("strip", g)]
    assert result.stages["export_strips"]["tiles"] == layout.rows * layout.cols  # each tile counted once
    assert all(("infer", TileKey(row=r, col=c)) not in position for r, c in empty)
    assert result.tiles_empty == len(empty)


def test_work_chunks_are_freed_once_no_core_needs_them(tmp_path):
    layout = TileLayout(height=5 * 96, width=5 * 96)
    _, log, _ = _run(tmp_path, layout)
    position = {entry: i for i, entry in enumerate(log)}
    keys = layout.tile_keys()
    assert {k for stage, k in log if stage == "free_inputs"} == set(keys)
    assert [stage for stage, _ in log].count("free_prediction") == len(keys)
    assert {k for stage, k in log if stage == "free_prediction"} == set(keys)
    for k in keys:
        assert position[("infer", k)] < position[("free_inputs", k)]
        for nb in layout.neighbours(k):  # every core that blends k's prediction was written before it went
            assert position[("mosaic", nb)] < position[("free_prediction", k)], (k, nb)


@pytest.mark.parametrize("done_rows", [1, 2])
def test_a_rerun_skips_what_the_store_marks_done(tmp_path, done_rows):
    layout = TileLayout(height=4 * 96, width=3 * 96)
    store = WorkStore(str(tmp_path / "work.zarr"))
    store.create(layout, "test")
    for k in layout.tile_keys():
        if k.row < done_rows:
            for stage in ("ingest", "infer", "mosaic"):
                store.mark(stage, k, DONE)
    store.mark("ingest", TileKey(row=done_rows, col=0), EMPTY)
    result, log, _ = _run(tmp_path, layout)  # same store path: _run re-opens it (same fingerprint)
    ingested = {k for stage, k in log if stage == "ingest"}
    assert all(k.row >= done_rows for k in ingested)
    assert TileKey(row=done_rows, col=0) not in ingested
    assert result.resumed["mosaic"] == done_rows * layout.cols
    assert np.all(store.status("mosaic")[:done_rows] == DONE)
