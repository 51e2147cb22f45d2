"""The streaming engine of `difffusr run`: every tile flows ingest -> super-resolution -> mosaic as soon as
its inputs exist, with a bounded number of tiles in flight.

Why not stages with barriers: on a GPU a tile's inference takes well under a second, so waiting for the last
ingest before the first prediction (and the last prediction before the first mosaic write) leaves the
accelerator idle for most of a large job. Why not Ray Data: a tile's mosaic core blends its 3 x 3
neighbours' predictions, a join across tile rows that Ray Data's linear map / map_batches operators can only
express with an all-to-all barrier; the scheduler below is one `ray.wait` loop that knows the neighbourhoods.

Tiles are opened in row-major order. A tile is "open" from its ingest submission until its core is written
(or it turns out to hold no data); at most `window` tiles are open, which is enough for the oldest open tile's
neighbours (one row and one tile ahead) to be open too, so the stream never stalls, and it bounds driver
memory, the Ray object store and the work store's disk (`WorkStore.free_*`) by the tiles in flight, not the
region. The per-tile state the driver holds is three (rows, cols) uint8 arrays (13 kB each for a granule);
everything else lives in the work store's markers, which tasks read per neighbourhood.

Ingest and mosaic are Ray tasks (retried on transient errors and on a killed worker); inference runs on a
pool of `TileWorker` actors loaded once, each fed `batch_tiles` tiles per call with up to two calls queued
so that it never waits for the driver.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.io.work_store import DONE, EMPTY, TODO, WorkStore
from pipeline.tiling.grid import TileKey, TileLayout

#: Calls queued per inference actor: one running, one waiting (its reads overlap nothing else, but the
#: actor starts it the moment the previous call returns, without a round trip to the driver).
ACTOR_QUEUE_DEPTH = 2


@dataclass
class StageStats:
    """Counts and times of one stage over the stream (seconds of the driver's monotonic clock)."""

    tiles: int = 0
    calls: int = 0
    busy_s: float = 0.0
    cpu_s: float | None = None
    first_start: float | None = None
    last_end: float | None = None

    def record(self, tiles: int, busy_s: float, start: float, end: float, cpu_s: float | None = None) -> None:
        self.tiles += tiles
        self.calls += 1
        self.busy_s += max(0.0, busy_s)
        if cpu_s is not None:
            self.cpu_s = (self.cpu_s or 0.0) + cpu_s
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_end = end if self.last_end is None else max(self.last_end, end)

    def to_dict(self, workers: int | None = None) -> dict[str, Any]:
        span = (self.last_end - self.first_start) if self.first_start is not None else 0.0
        out = {
            "tiles": self.tiles,
            "calls": self.calls,
            "busy_s": round(self.busy_s, 3),
            "span_s": round(span, 3),
            "per_tile_s": round(self.busy_s / self.tiles, 4) if self.tiles else None,
            "cpu_per_tile_s": round(self.cpu_s / self.tiles, 4)
            if self.tiles and self.cpu_s is not None
            else None,
            "tiles_per_s": round(self.tiles / span, 3) if span > 0 else None,
        }
        if workers:
            out["workers"] = workers
        return out


@dataclass
class StreamResult:
    """What the stream did, for the run summary and the manifest."""

    resumed: dict[str, int] = field(default_factory=dict)
    failed_granules: dict[str, str] = field(default_factory=dict)
    tiles_empty: int = 0
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    peak_open_tiles: int = 0
    window: int = 0
    wall_s: float = 0.0
    actor_busy_fraction: float | None = None
    model_busy_fraction: float | None = None
    #: seconds the actors spent in this job's forward passes (measured in the actor: exact even when the
    #: actors are shared with other jobs' streams, unlike the call spans seen from this driver)
    model_s: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StreamTasks:
    """The remote callables the stream submits (built by `run.py`, which owns the Ray wiring).

    Attributes:
        ingest: key -> ObjectRef of (`ingest_tile`'s result dict, seconds the task ran, its CPU seconds).
        mosaic: key -> ObjectRef of (`assemble_core`'s result, seconds, CPU seconds).
        actors: the inference actors (each with `run.remote(keys, layout)`).
        get: ray.get that re-raises a user error from a task as itself.
        wait: ray.wait.
        strip: strip index -> ObjectRef of (the strip's export, seconds, CPU seconds), submitted once every
            core of its tile rows (`strip_rows`) is written (or empty); None when the export runs after the
            stream.
        strip_rows: the tile rows each strip covers (a tile row can belong to two strips).
    """

    ingest: Callable[[TileKey], Any]
    mosaic: Callable[[TileKey], Any]
    actors: list[Any]
    get: Callable[[Any], Any]
    wait: Callable[..., tuple[list, list]]
    strip: Callable[[int], Any] | None = None
    strip_rows: Sequence[range] = ()


def stream_window(layout: TileLayout, batch_tiles: int, workers: int, cpus: int) -> int:
    """Most tiles open at once: two tile rows (the oldest open tile's neighbours are at most cols + 1
    positions ahead of it), plus what keeps the actors' queues and the CPUs busy."""
    return 2 * layout.cols + 2 + ACTOR_QUEUE_DEPTH * batch_tiles * workers + 2 * cpus


class TileStream:
    """Drives the tiles of one job through ingest, inference and mosaic (see the module docstring)."""

    def __init__(
        self,
        layout: TileLayout,
        store: WorkStore,
        tasks: StreamTasks,
        *,
        batch_tiles: int,
        window: int,
        max_tasks: int,
        free_work: bool,
        progress: bool,
        device: str = "cpu",
        method: str = "",
        markers: Markers | None = None,
    ) -> None:
        self.layout, self.store, self.tasks = layout, store, tasks
        self.batch_tiles, self.window, self.max_tasks = batch_tiles, window, max_tasks
        self.free_work, self.progress = free_work, progress
        self.label = f"super-resolve ({method}, {len(tasks.actors)} {device} worker(s))"
        self.ing, self.inf, self.mos = markers or read_markers(store)
        self.freed = np.zeros_like(self.ing, dtype=bool)  # prediction chunk deleted (or never written)
        self.stats = {
            "ingest": StageStats(),
            "inference": StageStats(),
            "mosaic": StageStats(),
            "export": StageStats(),
        }
        # per row, the tiles whose core is not final (not written, not empty): 0 -> the row can be exported
        finished = (self.ing == EMPTY) | (self.mos == DONE)
        self.row_left = (~finished).sum(axis=1)

    def _rows_starting_in(self, strip: int) -> int:
        """Tile rows whose first row is in strip `strip` (each tile row counted in one strip)."""
        rows = self.tasks.strip_rows[strip]
        before = self.tasks.strip_rows[strip - 1] if strip else range(0)
        return len([r for r in rows if r not in before])

    # ---- what is ready
    def _mosaic_ready(self, key: TileKey) -> bool:
        """Every tile whose prediction covers `key`'s core is predicted or empty."""
        if self.ing[key.row, key.col] != DONE or self.mos[key.row, key.col] == DONE:
            return False
        return all(
            self.ing[n.row, n.col] == EMPTY or self.inf[n.row, n.col] == DONE
            for n in self.layout.neighbours(key)
        )

    def _prediction_done_with(self, key: TileKey) -> bool:
        """No core still to be written blends `key`'s prediction."""
        return all(
            self.ing[n.row, n.col] == EMPTY or self.mos[n.row, n.col] == DONE
            for n in self.layout.neighbours(key)
        )

    # ---- the loop
    def run(self) -> StreamResult:
        from tqdm import tqdm

        t0 = time.perf_counter()
        total = self.layout.rows * self.layout.cols  # keys are made lazily: no per-tile object per AOI tile
        res = StreamResult(window=self.window)
        res.resumed = {
            "ingest": int((self.ing != TODO).sum()),
            "infer": int((self.inf == DONE).sum()),
            "mosaic": int((self.mos == DONE).sum()),
        }
        _say_resumed("ingest", res.resumed["ingest"], total)
        _say_resumed("inference", res.resumed["infer"], int((self.ing != EMPTY).sum()))
        _say_resumed("mosaic", res.resumed["mosaic"], int((self.ing != EMPTY).sum()))
        bars = {
            name: tqdm(
                total=total, desc=desc, unit="tile", file=sys.stderr, disable=not self.progress, position=i
            )
            for i, (name, desc) in enumerate(
                (("ingest", "ingest"), ("infer", self.label), ("mosaic", "mosaic"))
            )
        }
        bars["ingest"].update(res.resumed["ingest"])
        bars["infer"].update(res.resumed["infer"] + int((self.ing == EMPTY).sum()))
        bars["mosaic"].update(res.resumed["mosaic"] + int((self.ing == EMPTY).sum()))

        order: Iterator[TileKey] = (
            TileKey(row=r, col=c) for r in range(self.layout.rows) for c in range(self.layout.cols)
        )
        next_key: TileKey | None = next(order, None)
        infer_queue: deque[TileKey] = deque(_keys_where((self.ing == DONE) & (self.inf != DONE)))
        mosaic_queue: deque[TileKey] = deque(
            k for k in _keys_where((self.ing == DONE) & (self.mos != DONE)) if self._mosaic_ready(k)
        )
        queued_mosaic = {(k.row, k.col) for k in mosaic_queue}
        open_tiles = int(((self.ing == DONE) & (self.mos != DONE)).sum())
        pending: dict[Any, tuple[str, Any, float]] = {}  # ref -> (stage, payload, submit time)
        actor_load = {i: 0 for i in range(len(self.tasks.actors))}
        actor_free_at = {i: t0 for i in range(len(self.tasks.actors))}
        actor_ready: dict[int, float] = {}
        model_busy = 0.0  # seconds in forward passes; the calls' busy time is stats["inference"].busy_s
        for i, actor in enumerate(self.tasks.actors):  # when each model is loaded: the busy fraction's start
            pending[actor.__ray_ready__.remote()] = ("ready", i, t0)
        running_tasks = 0
        ingest_running = 0
        if self.free_work:  # a resumed run: free what an earlier attempt finished with
            for k in _keys_where(self.inf == DONE):
                if self._prediction_done_with(k):
                    self.freed[k.row, k.col] = True

        def submit_ingest() -> None:
            nonlocal next_key, open_tiles, running_tasks, ingest_running
            while next_key is not None and running_tasks < self.max_tasks and open_tiles < self.window:
                k = next_key
                next_key = next(order, None)
                if self.ing[k.row, k.col] != TODO:
                    continue
                pending[self.tasks.ingest(k)] = ("ingest", k, time.perf_counter())
                open_tiles += 1
                running_tasks += 1
                ingest_running += 1

        def submit_infer(flush: bool) -> None:
            for i, actor in enumerate(self.tasks.actors):
                while actor_load[i] < ACTOR_QUEUE_DEPTH and infer_queue:
                    if len(infer_queue) < self.batch_tiles and not flush:
                        return
                    batch = [infer_queue.popleft() for _ in range(min(self.batch_tiles, len(infer_queue)))]
                    ref = actor.run.remote(batch, self.layout, self.store)
                    pending[ref] = ("infer", (i, batch), time.perf_counter())
                    actor_load[i] += 1

        # per strip, its tile rows that still have a tile to finish; 0 -> the strip can be encoded
        strip_rows = self.tasks.strip_rows if self.tasks.strip is not None else ()
        strips_of_row: list[list[int]] = [[] for _ in range(self.layout.rows)]
        for g, rows in enumerate(strip_rows):
            for r in rows:
                strips_of_row[r].append(g)
        rows_left = [int((self.row_left[list(rows)] > 0).sum()) for rows in strip_rows]
        strip_queue: deque[int] = deque(g for g, n in enumerate(rows_left) if n == 0)

        def tile_finished(key: TileKey) -> None:
            self.row_left[key.row] -= 1
            if self.row_left[key.row] == 0:
                for g in strips_of_row[key.row]:
                    rows_left[g] -= 1
                    if rows_left[g] == 0:
                        strip_queue.append(g)

        def submit_mosaic() -> None:
            nonlocal running_tasks
            while strip_queue and running_tasks < self.max_tasks:  # rows first: they end the tiles' story
                r = strip_queue.popleft()
                pending[self.tasks.strip(r)] = ("strip", r, time.perf_counter())
                running_tasks += 1
            while mosaic_queue and running_tasks < self.max_tasks:
                k = mosaic_queue.popleft()
                pending[self.tasks.mosaic(k)] = ("mosaic", k, time.perf_counter())
                running_tasks += 1

        def check_mosaic_around(key: TileKey) -> None:
            for n in self.layout.neighbours(key):
                if (n.row, n.col) not in queued_mosaic and self._mosaic_ready(n):
                    mosaic_queue.append(n)
                    queued_mosaic.add((n.row, n.col))

        def maybe_free(key: TileKey) -> None:
            if not self.free_work:
                return
            for n in self.layout.neighbours(key):
                if (
                    not self.freed[n.row, n.col]
                    and self.inf[n.row, n.col] == DONE
                    and self._prediction_done_with(n)
                ):
                    self.store.free_prediction(n)
                    self.freed[n.row, n.col] = True

        def handle(ref: Any, stage: str, payload: Any, submitted: float) -> None:
            nonlocal open_tiles, running_tasks, ingest_running, model_busy
            result = self.tasks.get(ref)
            now = time.perf_counter()
            if stage == "ingest":
                running_tasks -= 1
                ingest_running -= 1
                k = payload
                result, seconds, cpu = result
                self.stats["ingest"].record(1, seconds, submitted, now, cpu)
                res.failed_granules.update(result.get("failed", {}))
                bars["ingest"].update(1)
                if result.get("empty"):
                    self.ing[k.row, k.col] = EMPTY
                    open_tiles -= 1
                    tile_finished(k)
                    bars["infer"].update(1)
                    bars["mosaic"].update(1)
                    check_mosaic_around(k)
                    maybe_free(k)
                else:
                    self.ing[k.row, k.col] = DONE
                    infer_queue.append(k)
            elif stage == "ready":
                actor_ready[payload] = now
                actor_free_at[payload] = max(actor_free_at[payload], now)
            elif stage == "infer":
                i, batch = payload
                actor_load[i] -= 1
                start = max(submitted, actor_free_at[i])  # an actor runs its calls one after another
                actor_free_at[i] = now
                model_busy += float(result.get("model_s", 0.0))
                for name in ("steps", "precision", "self_ensemble", "draws"):
                    if result.get(name) is not None:
                        res.model[name] = result[name]
                if result.get("pid") is not None and result["pid"] not in res.model.setdefault("pids", []):
                    res.model["pids"].append(result["pid"])
                # the actor's own time when it says (the driver notices a result late when it is busy)
                busy = float(result.get("call_s", now - start))
                self.stats["inference"].record(len(batch), busy, start, now, result.get("cpu_s"))
                bars["infer"].update(len(batch))
                for k in batch:
                    self.inf[k.row, k.col] = DONE
                    if self.free_work:
                        self.store.free_inputs(k)
                for k in batch:
                    check_mosaic_around(k)
            elif stage == "strip":
                running_tasks -= 1
                tiles = self.layout.cols * self._rows_starting_in(payload)
                self.stats["export"].record(tiles, result[1], submitted, now, result[2])
            else:
                running_tasks -= 1
                k = payload
                self.stats["mosaic"].record(1, result[1], submitted, now, result[2])
                self.mos[k.row, k.col] = DONE
                open_tiles -= 1
                tile_finished(k)
                bars["mosaic"].update(1)
                maybe_free(k)

        try:
            while True:
                submit_mosaic()  # mosaic first: it closes tiles and so lets new ones open
                submit_ingest()
                ingest_idle = next_key is None or open_tiles >= self.window or running_tasks >= self.max_tasks
                submit_infer(flush=ingest_idle and ingest_running == 0)
                res.peak_open_tiles = max(res.peak_open_tiles, open_tiles)
                if not pending:
                    break
                ready, rest = self.tasks.wait(list(pending), num_returns=1)
                if rest:  # take every call that has finished, not one per wait: fewer O(in flight) scans
                    more, _ = self.tasks.wait(rest, num_returns=len(rest), timeout=0)
                    ready = ready + more
                for ref in ready:
                    handle(ref, *pending.pop(ref))
        finally:
            for bar in bars.values():
                bar.close()
        res.tiles_empty = int((self.ing == EMPTY).sum())
        res.stages = {
            "ingest": self.stats["ingest"].to_dict(),
            "inference": self.stats["inference"].to_dict(workers=len(self.tasks.actors)),
            "mosaic": self.stats["mosaic"].to_dict(),
        }
        if self.tasks.strip is not None:
            res.stages["export_strips"] = self.stats["export"].to_dict()
        res.wall_s = time.perf_counter() - t0
        res.model_s = round(model_busy, 3)
        # busy / (model loaded -> the stream's last write), per actor, summed: the utilisation measure
        end = t0 + res.wall_s
        spans = [end - actor_ready[i] for i in actor_ready]
        if spans and sum(spans) > 0:
            res.actor_busy_fraction = round(self.stats["inference"].busy_s / sum(spans), 4)
            res.model_busy_fraction = round(model_busy / sum(spans), 4)
        return res


#: The (rows, cols) uint8 done markers of ingest, inference and mosaic.
Markers = tuple[np.ndarray, np.ndarray, np.ndarray]


def read_markers(store: WorkStore) -> Markers:
    """The whole AOI's done markers, read once per job by the driver (the resume state)."""
    return store.status("ingest"), store.status("infer"), store.status("mosaic")


def _keys_where(mask: np.ndarray) -> Iterator[TileKey]:
    """Keys of the tiles where a (rows, cols) mask is true, row-major."""
    for r, c in np.argwhere(mask):
        yield TileKey(row=int(r), col=int(c))


def _say_resumed(stage: str, done: int, total: int) -> None:
    if done:
        print(
            f"{stage}: skipping {done} of {total} tiles already done by an earlier attempt", file=sys.stderr
        )
