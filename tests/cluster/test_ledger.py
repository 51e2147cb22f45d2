"""The run ledger: one object per state change, folded into each unit's state; concurrent writers lose
nothing; the same on a real S3 endpoint (moto server on loopback)."""

from __future__ import annotations

import threading

import boto3

from pipeline.cluster.ledger import Ledger, fold, status


def test_a_unit_state_is_its_latest_event_and_attempts_count_until_a_reset(tmp_path):
    ledger = Ledger(str(tmp_path / "root"))
    key = "33UUP/2017-06-01_2017-06-30"
    ledger.record(key, "running", attempt=1)
    ledger.record(key, "failed", attempt=1, error="DataError: B05 truncated")
    ledger.record(key, "running", attempt=2)
    ledger.record(key, "heartbeat")
    ledger.record(key, "dead", attempt=2, error="DataError: B05 truncated")
    rec = ledger.records()[key]
    assert (rec.state, rec.attempts, rec.error) == ("dead", 2, "DataError: B05 truncated")
    assert rec.history == ["running", "failed", "running", "dead"]
    ledger.record(key, "pending", reason="--retry-dead")
    ledger.record(key, "running", attempt=1)
    ledger.record(key, "done", seconds=3.5, tiles=4, bytes=1000, accelerator_s=2.0)
    rec = ledger.records()[key]
    assert (rec.state, rec.attempts, rec.error, rec.tiles, rec.bytes) == ("done", 1, None, 4, 1000)


def test_status_counts_states_and_estimates_the_rest_from_the_throughput():
    t0 = 1_000_000.0
    recs = {
        "a": fold("a", [{"state": "running", "time": t0}, {"state": "done", "time": t0 + 1800, "tiles": 3}]),
        "b": fold("b", [{"state": "running", "time": t0}, {"state": "empty", "time": t0 + 3600}]),
        "c": fold("c", [{"state": "running", "time": t0 + 3600}]),  # silent since: its driver died
        "d": fold("d", []),
    }
    st = status(recs, now=t0 + 3600 + 1000, stale_after_s=300)
    assert st.counts == {"pending": 1, "running": 1, "done": 1, "empty": 1, "failed": 0, "dead": 0}
    assert st.units_per_hour == 2.0  # two units finished in the hour since the first start
    assert st.eta_s == 3600.0  # two left at two per hour
    assert st.stale_running == ["c"] and st.tiles == 3


def test_concurrent_writers_lose_no_event(tmp_path):
    ledger = Ledger(str(tmp_path / "root"))

    def write(n: int) -> None:
        for i in range(20):
            ledger.record(f"u{n}/w", "heartbeat" if i % 2 else "running", attempt=i)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs = ledger.records()
    assert sorted(recs) == [f"u{n}/w" for n in range(4)]
    assert all(r.attempts == 10 for r in recs.values())


def test_a_torn_or_foreign_file_is_ignored(tmp_path):
    ledger = Ledger(str(tmp_path / "root"))
    ledger.record("u/w", "running")
    folder = tmp_path / "root" / "_ledger" / "u__w"
    (folder / "99999999999999999999-dead-done.json").write_text('{"unit": "u/w", "sta')  # cut mid-write
    (folder / ".tmp-partial").write_text("x")
    assert ledger.records()["u/w"].state == "running"


def test_the_ledger_works_on_s3(s3_env):
    boto3.client("s3").create_bucket(Bucket="ledger")
    ledger = Ledger("s3://ledger/plans/europe")
    ledger.record("29UPU/2017-06-01_2017-06-30", "running", attempt=1)
    ledger.record("29UPU/2017-06-01_2017-06-30", "done", tiles=2, bytes=10)
    recs = Ledger("s3://ledger/plans/europe").records(["33UUP/2017-06-01_2017-06-30"])
    assert recs["29UPU/2017-06-01_2017-06-30"].state == "done"
    assert recs["33UUP/2017-06-01_2017-06-30"].state == "pending"


def test_a_running_unit_is_taken_over_only_when_its_driver_is_gone():
    import os
    import socket
    import subprocess
    import sys
    import time

    from pipeline.run_plan import _driver, _driver_gone

    now = time.time()
    host = socket.gethostname()
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    dead_pid = int(finished.stdout)

    def held_by(host: str, pid: int, started: float | None = None):  # from the latest running/heartbeat event
        event = {"state": "running", "time": now - 10, "host": host, "pid": pid, "started": started}
        return fold("u/w", [event])

    me = _driver()
    assert not _driver_gone(held_by(host, os.getpid(), me["started"]), now, stale_after_s=300)  # alive, fresh
    assert not _driver_gone(held_by(host, os.getpid()), now, stale_after_s=300)  # a ledger from before
    assert _driver_gone(held_by(host, dead_pid), now, stale_after_s=300)  # killed run, this host
    # the killed driver's pid now names another process (pids wrap on a busy host): not the driver
    assert _driver_gone(held_by(host, os.getpid(), me["started"] - 60), now, stale_after_s=300)
    assert not _driver_gone(held_by("other-node", dead_pid), now, stale_after_s=300)
    assert _driver_gone(held_by("other-node", 1), now + 600, stale_after_s=300)  # silent
