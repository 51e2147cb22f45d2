"""Per-tile bookkeeping of `difffusr run` at a granule's tile count, without pixels.

Two costs that must not grow with the region (issue 12):
1. A mosaic task's marker reads: it reads the done markers of its 3 x 3 neighbourhood
   (`WorkStore.status_window`), where it used to read the whole AOI's marker arrays (`WorkStore.status`,
   timed too, for reference). Real Zarr v3 stores on local disk, one marker chunk per tile.
2. The driver's scheduling: the streaming engine (`pipeline.stream.TileStream`) run over the whole tile grid
   with tasks that complete at once, so that only its own bookkeeping is timed; its peak Python memory
   (tracemalloc) shows whether driver state grows with the region.

    python -m benchmarks.bookkeeping --tiles 256,4096,13225 --json benchmarks/results/bookkeeping.json
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import tracemalloc
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, write_json
from pipeline.io.work_store import DONE, WorkStore
from pipeline.stream import StreamTasks, TileStream, stream_window
from pipeline.tiling.grid import DEFAULT_CORE, DEFAULT_HALO, TileKey, TileLayout


def square_layout(tiles: int) -> TileLayout:
    side = math.isqrt(tiles)
    return TileLayout(
        height=side * DEFAULT_CORE, width=side * DEFAULT_CORE, core=DEFAULT_CORE, halo=DEFAULT_HALO
    )


def marker_reads(layout: TileLayout, root: Path, samples: int, whole_samples: int) -> dict[str, float]:
    """Seconds per tile of a mosaic task's marker reads: neighbourhood (now) and whole AOI (before)."""
    store = WorkStore(str(root / "work.zarr"))
    store.create(layout, "bench")
    rng = np.random.default_rng(0)
    keys = [TileKey(row=int(r), col=int(c)) for r, c in rng.integers(0, layout.rows, size=(samples, 2))]
    for k in keys[:16]:  # a few markers written, so the reads find chunks
        store.mark("infer", k, DONE)
    t = time.perf_counter()
    for k in keys:
        rows, cols = slice(max(k.row - 1, 0), k.row + 2), slice(max(k.col - 1, 0), k.col + 2)
        store.status_window("infer", rows, cols)
        store.status_window("ingest", rows, cols)
    window_s = (time.perf_counter() - t) / len(keys)
    t = time.perf_counter()
    for _ in range(whole_samples):
        store.status("infer")
        store.status("ingest")
    whole_s = (time.perf_counter() - t) / whole_samples
    return {"neighbourhood_read_s": window_s, "whole_aoi_read_s": whole_s}


class _Instant:
    """Stand-ins for the Ray calls: every call has finished by the time it is waited on."""

    def __init__(self) -> None:
        self.results: dict[int, Any] = {}
        self.ids = count()

    def submit(self, value: Any) -> int:
        ref = next(self.ids)
        self.results[ref] = value
        return ref

    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: int) -> Any:
        return self.results.pop(ref)


class _Method:
    def __init__(self, fn) -> None:
        self.remote = fn


class _Actor:
    def __init__(self, calls: _Instant) -> None:
        self.run = _Method(lambda keys, layout, store=None: calls.submit({"tiles": len(keys)}))
        self.__ray_ready__ = _Method(lambda: calls.submit(True))


def scheduling(layout: TileLayout, root: Path, *, batch_tiles: int = 4, workers: int = 1) -> dict[str, float]:
    """Driver seconds and peak Python memory per tile of the streaming engine over the whole grid."""
    store = WorkStore(str(root / "stream.zarr"))
    store.create(layout, "bench")
    calls = _Instant()
    tasks = StreamTasks(
        ingest=lambda k: calls.submit(({"empty": False, "failed": {}}, 0.0, 0.0)),
        mosaic=lambda k: calls.submit((0, 0.0, 0.0)),
        actors=[_Actor(calls) for _ in range(workers)],
        get=calls.get,
        wait=calls.wait,
    )
    stream = TileStream(
        layout,
        store,
        tasks,
        batch_tiles=batch_tiles,
        window=stream_window(layout, batch_tiles, workers, cpus=2),
        max_tasks=4,
        free_work=False,
        progress=False,
    )
    tracemalloc.start()
    t = time.perf_counter()
    result = stream.run()
    wall = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(layout.tile_keys())
    assert result.stages["mosaic"]["tiles"] == n, result.stages
    return {
        "driver_s_per_tile": wall / n,
        "driver_python_peak_bytes": peak,
        "window_tiles": result.window,
        "peak_open_tiles": result.peak_open_tiles,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", default="256,4096,13225", help="tile counts (square grids)")
    p.add_argument("--samples", type=int, default=200, help="neighbourhood reads timed per grid")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = []
    for n in (int(v) for v in args.tiles.split(",")):
        layout = square_layout(n)
        with tempfile.TemporaryDirectory(prefix="difffusr-bookkeeping-") as tmp:
            row = {"tiles": layout.rows * layout.cols, "grid": [layout.rows, layout.cols]}
            row.update(marker_reads(layout, Path(tmp), args.samples, whole_samples=3))
            row.update(scheduling(layout, Path(tmp)))
        rows.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
        print(rows[-1], flush=True)
    lo, hi = rows[0], rows[-1]
    result = {
        "machine": machine(),
        "runs": rows,
        "ratios_largest_vs_smallest": {
            "tiles": f"{hi['tiles']} / {lo['tiles']}",
            "neighbourhood_read_per_tile": round(hi["neighbourhood_read_s"] / lo["neighbourhood_read_s"], 3),
            "whole_aoi_read_per_tile_before": round(hi["whole_aoi_read_s"] / lo["whole_aoi_read_s"], 3),
            "driver_s_per_tile": round(hi["driver_s_per_tile"] / lo["driver_s_per_tile"], 3),
            "driver_python_peak": round(hi["driver_python_peak_bytes"] / lo["driver_python_peak_bytes"], 3),
        },
    }
    print(result["ratios_largest_vs_smallest"])
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
