"""Helpers for the tests that SIGKILL a `difffusr run --plan` in a child process at a chosen point."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.cluster.ledger import Ledger, UnitRecord


def kill_plan_run_when(
    cmd: list[str],
    env: dict[str, str],
    root: Path,
    ready: Callable[[dict[str, UnitRecord]], bool],
    timeout_s: float,
) -> dict[str, UnitRecord]:
    """Start `cmd` (a plan run into `root`) in its own process group, SIGKILL the group as soon as
    `ready(ledger records)` holds, and return the records the killed run left; fails if the run ended
    first."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if ready(Ledger(str(root)).records()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the plan finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return Ledger(str(root)).records()
