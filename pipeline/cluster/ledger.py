"""The run ledger of a plan: one small JSON object per state change of a work unit, under `ROOT/_ledger/`.

A plan's output root (a local path or `s3://...`) holds, per unit, a folder of events named
`<UTC time ns>-<random>-<state>.json`. Writers never overwrite or append: every change is a new object,
written whole (atomic on S3, temp-name + rename locally, `io.outputs.OutputDir`), so any number of drivers
can record at once and a crash leaves at most a missing event, never a torn one. A unit's state is its
latest event by name (time first); "heartbeat" events only refresh a running unit's liveness.

States: pending (no event yet, or reset by `--retry-dead`), running, done, empty (no granule in the window),
failed (the attempt failed; it will be retried), dead (failed `max_attempts` times; left for `--retry-dead`).
A running unit whose last heartbeat is older than `stale_after_s` (its driver died) counts as reclaimable.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.io.outputs import OutputDir

LEDGER_DIR = "_ledger"
STATES: tuple[str, ...] = ("pending", "running", "done", "empty", "failed", "dead")
#: Final states: a rerun skips them (dead only until `--retry-dead`).
FINAL_STATES: tuple[str, ...] = ("done", "empty", "dead")
HEARTBEAT = "heartbeat"
#: A running unit silent this long is taken to have lost its driver (heartbeats come every 30 s by default).
DEFAULT_STALE_AFTER_S = 300.0


@dataclass
class UnitRecord:
    """What the ledger knows of one unit, folded from its events in order.

    Attributes:
        key: the unit's key ("33UVP/2017-06-01_2017-06-30").
        state: one of STATES.
        attempts: attempts started since the last reset (`--retry-dead`).
        first_start / last_finish / last_heartbeat: UTC epoch seconds (None: never).
        seconds: wall seconds of the successful attempt; tiles, bytes: what it wrote.
        accelerator_s: seconds the inference actors spent in forward passes for it.
        error: the last failed attempt's error.
        driver: {"host", "pid", "started"} of the driver of the latest running or heartbeat event (who holds
            the unit; "started": its process's start time, epoch seconds, None in ledgers from before).
    """

    key: str
    state: str = "pending"
    attempts: int = 0
    first_start: float | None = None
    last_finish: float | None = None
    last_heartbeat: float | None = None
    seconds: float | None = None
    tiles: int = 0
    bytes: int = 0
    accelerator_s: float = 0.0
    error: str | None = None
    history: list[str] = field(default_factory=list)
    driver: dict[str, Any] | None = None

    def stale(self, now: float, stale_after_s: float) -> bool:
        """A running unit whose driver stopped sending heartbeats."""
        beat = self.last_heartbeat or self.first_start or 0.0
        return self.state == "running" and now - beat > stale_after_s


def _event_dir(key: str) -> str:
    return f"{LEDGER_DIR}/{key.replace('/', '__')}"


class Ledger:
    """The ledger under a plan's output root."""

    def __init__(self, root: str) -> None:
        self.out = OutputDir(root)

    def record(self, key: str, state: str, **fields: Any) -> None:
        """Append one event for unit `key` (state in STATES or "heartbeat"), with free-form fields."""
        if state not in (*STATES, HEARTBEAT):
            raise ValueError(f"ledger: unknown state {state!r}")
        ns = time.time_ns()
        name = f"{ns:020d}-{secrets.token_hex(4)}-{state}.json"
        doc = {"unit": key, "state": state, "time": ns / 1e9, **fields}
        self.out.write_json(f"{_event_dir(key)}/{name}", doc)

    def records(self, keys: Iterable[str] | None = None) -> dict[str, UnitRecord]:
        """Every unit's record (one listing of the ledger, then the events it names); `keys` adds units
        without events as pending."""
        fs, base = self.out.fs, f"{self.out.root}/{LEDGER_DIR}"
        fs.invalidate_cache()
        paths = sorted(fs.find(base)) if fs.exists(base) else []
        events: dict[str, list[dict[str, Any]]] = {}
        for path in paths:
            if not path.endswith(".json"):
                continue  # a local writer's temporary file
            try:
                doc = json.loads(fs.cat_file(path))
            except (OSError, ValueError):
                continue  # unreadable: as if never written (a write is all or nothing)
            events.setdefault(doc["unit"], []).append(doc)
        out = {k: UnitRecord(key=k) for k in keys or ()}
        for key, evs in events.items():
            out[key] = fold(key, evs)  # in name order: the writer's clock in ns first
        return out


def fold(key: str, events: list[dict[str, Any]]) -> UnitRecord:
    """A unit's record from its events in time order."""
    rec = UnitRecord(key=key)
    for ev in events:
        state, t = ev["state"], ev["time"]
        if state in ("running", HEARTBEAT) and "host" in ev:
            rec.driver = {"host": ev["host"], "pid": ev.get("pid"), "started": ev.get("started")}
        if state == HEARTBEAT:
            rec.last_heartbeat = t
            continue
        rec.history.append(state)
        if state == "pending":  # reset (--retry-dead): a fresh budget of attempts
            rec.attempts, rec.error = 0, None
        elif state == "running":
            rec.attempts += 1
            rec.first_start = rec.first_start or t
            rec.last_heartbeat = t
        elif state in ("done", "empty"):
            rec.last_finish = t
            rec.seconds = ev.get("seconds")
            rec.tiles = int(ev.get("tiles", 0))
            rec.bytes = int(ev.get("bytes", 0))
            rec.accelerator_s += float(ev.get("accelerator_s", 0.0))
            rec.error = None
        elif state in ("failed", "dead"):
            rec.last_finish = t
            rec.error = ev.get("error", rec.error)
        rec.state = state
    return rec


@dataclass
class LedgerStatus:
    """`difffusr plan status`: counts per state, throughput and an estimate to finish."""

    units: int
    counts: dict[str, int]
    elapsed_s: float
    units_per_hour: float | None
    eta_s: float | None
    tiles: int
    bytes: int
    accelerator_s: float
    dead: dict[str, str]
    stale_running: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(
    records: dict[str, UnitRecord], *, now: float | None = None, stale_after_s: float = DEFAULT_STALE_AFTER_S
) -> LedgerStatus:
    """Summarise the records: throughput = finished units per hour between the first start and the last
    finish; the estimate to finish = the units not final at that rate."""
    now = time.time() if now is None else now
    counts = dict.fromkeys(STATES, 0)
    for rec in records.values():
        counts[rec.state] += 1
    starts = [r.first_start for r in records.values() if r.first_start is not None]
    finished = [r for r in records.values() if r.state in ("done", "empty") and r.last_finish is not None]
    elapsed = (max(r.last_finish for r in finished) - min(starts)) if finished and starts else 0.0  # type: ignore[type-var]
    rate = len(finished) / (elapsed / 3600) if elapsed > 0 else None
    remaining = sum(1 for r in records.values() if r.state not in FINAL_STATES)
    return LedgerStatus(
        units=len(records),
        counts=counts,
        elapsed_s=round(elapsed, 3),
        units_per_hour=None if rate is None else round(rate, 3),
        eta_s=None if rate is None else round(remaining / rate * 3600, 1),
        tiles=sum(r.tiles for r in records.values()),
        bytes=sum(r.bytes for r in records.values()),
        accelerator_s=round(sum(r.accelerator_s for r in records.values()), 3),
        dead={k: r.error or "" for k, r in records.items() if r.state == "dead"},
        stale_running=sorted(k for k, r in records.items() if r.stale(now, stale_after_s)),
    )
