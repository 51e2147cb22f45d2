"""`difffusr run --plan FILE --out ROOT`: run every pending work unit of a `difffusr plan` file.

Each unit is an ordinary `run` into `ROOT/<tile_id>/<start>_<end>` with the unit's bbox, dates and UTM CRS,
all units sharing one actor pool (the model loads once), `concurrent_units` of them in flight at once (driver
threads; Ray's API is thread-safe and each unit's stream bounds its own tiles in flight). Every state change
goes to the run ledger under `ROOT/_ledger/` (`cluster.ledger`; `difffusr plan status ROOT` reads it): a unit
runs, is done or empty (no granule in its window), or fails; a failed attempt is retried after a backoff
(doubling from `backoff_s`) up to `max_attempts` attempts in all, counted across reruns, then the unit is
marked dead with its error and skipped until a rerun with `retry_dead`. An interrupted unit resumes from its
own tile markers.

A unit marked running by another driver is left alone while that driver's heartbeats (every `heartbeat_s`) are
fresh; one whose driver is gone (its process no longer exists on this host, or silent for `stale_after_s`) is
taken over, so a rerun after a kill picks up where the killed run stopped.

The product is `ROOT/collection.json`, a STAC Collection over the finished units' items
(`cluster.collection`), rewritten after every run.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.catalog.query import parse_datetime_range
from pipeline.cluster.collection import write_plan_collection
from pipeline.cluster.ledger import DEFAULT_STALE_AFTER_S, HEARTBEAT, Ledger, UnitRecord
from pipeline.cluster.plan import DONE_MARKER, WorkUnit, load_plan, pending_units, unit_output
from pipeline.cluster.runtime import start_ray
from pipeline.config import PlanRunConfig
from pipeline.errors import ConfigError, EmptySearchError
from pipeline.io.outputs import OutputDir


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Attributes:
    max_attempts: attempts of a unit, across reruns, before it is marked dead.
    backoff_s: wait before the first retry; doubled for each further one.
    retry_dead: give dead units a fresh budget of attempts.
    heartbeat_s: seconds between a running unit's heartbeats in the ledger.
    stale_after_s: a running unit silent this long has lost its driver and may be taken over.
    concurrent_units: units in flight at once, all feeding the one actor pool (None: one per inference
        actor), so that one unit's ingest and mosaic overlap another's inference.
    """

    max_attempts: int = 3
    backoff_s: float = 5.0
    retry_dead: bool = False
    heartbeat_s: float = 30.0
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    concurrent_units: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"--max-attempts {self.max_attempts} must be at least 1")
        if self.concurrent_units is not None and self.concurrent_units < 1:
            raise ConfigError(f"--concurrent-units {self.concurrent_units} must be at least 1")


@dataclass
class PlanSummary:
    units: int = 0
    skipped_done: int = 0
    completed: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    #: units that ended dead in this run (their last attempt's error)
    failed: dict[str, str] = field(default_factory=dict)
    skipped_dead: list[str] = field(default_factory=list)
    running_elsewhere: list[str] = field(default_factory=list)
    collection: str | None = None


def _driver() -> dict[str, object]:
    """Who holds a unit: host, pid, and the process's start time (a pid alone is reused: 32,768 of them on a
    busy Ray host, threads included, wrap within minutes)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid())}


def _started(pid: int) -> float | None:
    """Start time (epoch s) of process `pid` on this host, or None when there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _driver_gone(rec: UnitRecord, now: float, stale_after_s: float) -> bool:
    """Whether a running unit's driver has stopped: its process is gone from this host (or its pid now names
    another process), or it went silent."""
    if rec.stale(now, stale_after_s):
        return True
    last = rec.driver
    if last and last.get("host") == socket.gethostname():
        started = _started(int(last["pid"]))  # type: ignore[arg-type]
        if started is None:
            return True
        recorded = last.get("started")
        return recorded is not None and abs(started - float(recorded)) > 0.5
    return False


class _Heartbeat:
    """Records a heartbeat for `key` every `every_s` seconds until stopped."""

    def __init__(self, ledger: Ledger, key: str, every_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(ledger, key, every_s), daemon=True)

    def _beat(self, ledger: Ledger, key: str, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                ledger.record(key, HEARTBEAT, **_driver())
            except Exception as exc:  # noqa: BLE001 -- a missed heartbeat is not worth failing the unit for
                print(f"plan: heartbeat of {key} not recorded: {exc}", file=sys.stderr)

    def __enter__(self) -> _Heartbeat:  # noqa: PYI034 -- private, never subclassed
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _bytes_under(url: str) -> int:
    out = OutputDir(url)
    try:
        return int(out.fs.du(out.root))
    except (OSError, FileNotFoundError):
        return 0


def _record_found_done(ledger: Ledger, unit: WorkUnit, root: str, rec: UnitRecord) -> None:
    """Record the final state of a unit whose output is finished but whose ledger is not: its driver was
    killed after `run_job` wrote the unit's manifest and before the ledger heard (else `plan status` and the
    next rerun would see it running, or failed, for ever)."""
    out = OutputDir(unit_output(root, unit))
    try:
        manifest = out.read_json(DONE_MARKER)
    except (OSError, ValueError):
        manifest = {}
    if manifest.get("status") == "empty":
        ledger.record(unit.key, "empty", attempt=rec.attempts, reason=manifest.get("reason"))
        return
    _record_done(
        ledger,
        unit.key,
        out.url,
        attempt=rec.attempts,
        seconds=(manifest.get("timings_s") or {}).get("total"),
        tiles=int(manifest.get("tiles") or 0),
        stream=manifest.get("stream") or {},
        reason="found finished on disk",
    )


def _record_done(ledger: Ledger, key: str, out_url: str, *, stream: dict, **fields: object) -> None:
    """Record a unit's "done" event: `fields` (attempt, seconds, tiles, ...), its output's bytes and the
    forward-pass seconds of its `stream` report."""
    ledger.record(
        key,
        "done",
        bytes=_bytes_under(out_url),
        # forward-pass seconds measured in the actors: the call spans the unit's stream sees would count
        # other units' calls too when several share the actors
        accelerator_s=float(stream.get("model_s") or 0.0),
        **fields,
    )


def run_plan(
    plan_file: str, base: PlanRunConfig, *, progress: bool = True, policy: RetryPolicy | None = None
) -> PlanSummary:
    """Run the pending units of a plan into `base.output.out`; `base` gives the catalog, method, options."""
    from pipeline.run import run_job, start_actors, stop_actors

    policy = policy or RetryPolicy()
    units = load_plan(plan_file)
    root = base.output.out
    OutputDir(root).check_writable()
    ledger = Ledger(root)
    records = ledger.records(u.key for u in units)
    summary = PlanSummary(units=len(units))
    not_done = {u.key for u in pending_units(units, root)}
    summary.skipped_done = len(units) - len(not_done)
    todo: list[WorkUnit] = []
    now = time.time()
    for unit in units:
        rec = records[unit.key]
        if unit.key not in not_done:
            if rec.state not in ("done", "empty"):
                _record_found_done(ledger, unit, root, rec)
            continue
        if rec.state == "running" and not _driver_gone(rec, now, policy.stale_after_s):
            summary.running_elsewhere.append(unit.key)
            continue
        if rec.state == "dead" or (
            rec.attempts >= policy.max_attempts and rec.state in ("failed", "running")
        ):
            if not policy.retry_dead:
                if rec.state != "dead":  # its last attempt's driver died before it could say so
                    ledger.record(unit.key, "dead", error=rec.error or "attempts exhausted")
                summary.skipped_dead.append(unit.key)
                continue
            ledger.record(unit.key, "pending", reason="--retry-dead")
            rec.attempts = 0
        todo.append(unit)
    if summary.skipped_done:
        print(f"plan: skipping {summary.skipped_done} of {len(units)} units already done", file=sys.stderr)
    if summary.skipped_dead:
        print(
            f"plan: skipping {len(summary.skipped_dead)} dead units (rerun with --retry-dead to try again)",
            file=sys.stderr,
        )
    started_ray = start_ray(base.compute.ray_address, object_store_bytes=256 * 2**20) if todo else False
    pool = start_actors(base) if todo else None  # one actor pool, its model loaded once, for every unit
    try:
        in_flight = max(1, min(len(todo), policy.concurrent_units or (len(pool.actors) if pool else 1)))
        progress = progress and in_flight == 1  # one set of bars at a time; with more, a line per unit

        def one(n: int, unit: WorkUnit) -> None:
            print(f"plan: unit {n}/{len(todo)} {unit.key}", file=sys.stderr)
            attempts = records[unit.key].attempts
            _run_unit(unit, base, root, ledger, attempts, policy, summary, run_job, pool, progress)

        with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="unit") as units_pool:
            for future in [units_pool.submit(one, n, u) for n, u in enumerate(todo, start=1)]:
                future.result()  # a unit's own failures are recorded inside; this re-raises anything else
        summary.collection = write_plan_collection(root, units)
    finally:
        if pool is not None:
            stop_actors(pool)
        if started_ray:
            import ray

            ray.shutdown()
    return summary


def _run_unit(unit, base, root, ledger, attempts, policy, summary, run_job, pool, progress) -> None:
    """Attempts of one unit until it is done, empty or dead."""
    start, end = parse_datetime_range(unit.datetime)
    cfg = base.unit(
        bbox=unit.bbox, start=start, end=end, out=unit_output(root, unit), crs=f"EPSG:{unit.epsg}"
    )
    while True:
        attempts += 1
        ledger.record(unit.key, "running", attempt=attempts, **_driver())
        t0 = time.time()
        try:
            with _Heartbeat(ledger, unit.key, policy.heartbeat_s):
                result = run_job(cfg, progress=progress, pool=pool)
        except EmptySearchError as exc:
            OutputDir(cfg.output.out).write_json(
                DONE_MARKER,
                {
                    "status": "empty",
                    "unit": unit.key,
                    "reason": str(exc),
                    "finished": datetime.now(UTC).isoformat(),
                },
            )
            ledger.record(
                unit.key, "empty", attempt=attempts, seconds=round(time.time() - t0, 3), reason=str(exc)
            )
            summary.empty.append(unit.key)
            return
        except Exception as exc:  # noqa: BLE001 -- any failure of a unit is recorded, the plan goes on
            error = f"{type(exc).__name__}: {exc}"
            final = attempts >= policy.max_attempts
            ledger.record(unit.key, "dead" if final else "failed", attempt=attempts, error=error)
            print(f"plan: unit {unit.key} attempt {attempts} failed: {error}", file=sys.stderr)
            if final:
                summary.failed[unit.key] = error
                return
            time.sleep(policy.backoff_s * 2 ** (attempts - 1))
            continue
        _record_done(
            ledger,
            unit.key,
            cfg.output.out,
            attempt=attempts,
            seconds=round(time.time() - t0, 3),
            tiles=result.tiles,
            stream=result.stream,
        )
        summary.completed.append(unit.key)
        return
