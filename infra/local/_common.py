"""Small helpers shared by the loopback services: free ports, readiness polling, PID-safe stops."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.errors import DiffFuSRError

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = "run `make setup` (bash infra/local/setup.sh) as root"


class LocalServiceError(DiffFuSRError):
    """A loopback service (STAC API, PostgreSQL, S3) could not be set up, started or stopped."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    The port is drawn below the kernel's ephemeral range (and above Ray's worker ports, 10002-19999):
    an OS-picked port lies inside that range, where any outgoing connection (a database client, Ray,
    boto) may take it between this call and the server's bind, a race CI hit once.
    """
    lo_ephemeral, _ = _ephemeral_range()
    lo, hi = 20000, max(20001, lo_ephemeral - 1)
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(lo, hi)
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # crowded host: let the OS pick
        s.bind((host, 0))
        return int(s.getsockname()[1])


ADDRESS_IN_USE = "address already in use"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound (nobody listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET ``url`` answers HTTP 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # loopback only
            return 200 <= r.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def log_tail(path: Path, n: int = 15) -> str:
    """Last ``n`` lines of a log file, or '' when it does not exist."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def pid_matches(pid: int, needle: str) -> bool:
    """True when process ``pid`` is alive and its command line contains ``needle``.

    Guards against PID reuse: a stop never signals a process that is not the one it started.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return needle in cmdline


def stop_pid(pid: int, needle: str, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Send ``sig`` to ``pid`` (only if it still runs ``needle``), wait, then SIGKILL if needed."""
    if not pid_matches(pid, needle):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:  # reap it when it is our child, else poll /proc
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            pass
        if not pid_matches(pid, needle):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
