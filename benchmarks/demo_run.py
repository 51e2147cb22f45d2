"""Run `difffusr run` on the bundled catalog (as `make demo` does) in a child process and sample its memory.

The STAC API is the real loopback server of `infra/local` over `data/samples/catalog`; the job starts its
own local Ray cluster. While it runs, the resident set size (RSS) of the driver process and of every
descendant (Ray's GCS/raylet and its `ray::` worker processes) is sampled with psutil, and each process's
peak is kept. RSS counts pages of shared memory (the Ray object store, mapped libraries) a process has
touched; the private peak is RSS minus those shared resident pages (`/proc/PID/statm`), the process's own
heap, which is what Ray's memory monitor counts against a node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import fsspec
import psutil

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "data" / "samples" / "catalog"
#: The demo AOI of `make demo`: the bundled Austrian patch (1.2 x 1.2 km), and its central quarter.
DEMO_BBOX: tuple[float, float, float, float] = (13.7127, 48.2168, 13.7292, 48.2278)
DEMO_DATETIME = "2017-06-01/2017-06-30"


def quarter_bbox(bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The central box of half the width and height (a quarter of the area)."""
    w, s, e, n = bbox
    cx, cy, hw, hh = (w + e) / 2, (s + n) / 2, (e - w) / 4, (n - s) / 4
    return (cx - hw, cy - hh, cx + hw, cy + hh)


@dataclass(frozen=True, kw_only=True)
class DemoRun:
    """Outcome of one monitored run."""

    argv: list[str]
    wall_s: float
    returncode: int
    manifest: dict | None
    driver_peak_mb: float
    worker_peak_mb: float
    ray_system_peak_mb: float
    driver_private_peak_mb: float
    worker_private_peak_mb: float
    processes: dict[str, float]
    stderr_tail: str
    #: (seconds since start, RSS MiB, private MiB) of each `ray::TileWorker` actor, every `trace_s`
    actor_traces: dict[int, list[tuple[float, float, float]]]


def _kind(cmdline: list[str], driver_pid: int, pid: int) -> str:
    if pid == driver_pid:
        return "driver"
    text = " ".join(cmdline[:3])
    if text.startswith("ray::") or "default_worker.py" in text:
        return "worker"
    return "ray_system"


def run_monitored(
    argv: list[str],
    *,
    interval_s: float = 0.1,
    env: dict | None = None,
    timeout_s: float = 1800,
    trace_s: float = 2.0,
) -> DemoRun:
    """Run `difffusr ARGV...` in a child process, sampling the RSS of it and its descendants."""
    cmd = [
        sys.executable,
        "-c",
        "import sys; from pipeline.cli import main; raise SystemExit(main(sys.argv[1:]))",
        *argv,
    ]
    full_env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        **(env or {}),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    root = psutil.Process(proc.pid)
    peaks: dict[int, tuple[str, str, float]] = {}
    private: dict[int, tuple[str, float]] = {}  # peak RSS - shared resident pages, per process
    traces: dict[int, list[tuple[float, float, float]]] = {}
    next_trace = 0.0
    while proc.poll() is None:
        if time.perf_counter() - t0 > timeout_s:
            proc.kill()
            break
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                mem = p.memory_info()
                rss = mem.rss / 2**20
                name = p.name()
                cmdline = p.cmdline()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            kind = _kind(cmdline, proc.pid, p.pid)
            label = (cmdline[0] if cmdline and cmdline[0].startswith("ray::") else name)[:40]
            prev = peaks.get(p.pid, ("", "", 0.0))[2]
            peaks[p.pid] = (kind, label, max(prev, rss))
            own = (mem.rss - getattr(mem, "shared", 0)) / 2**20
            private[p.pid] = (kind, max(private.get(p.pid, ("", 0.0))[1], own))
            if label.startswith("ray::TileWorker") and time.perf_counter() - t0 >= next_trace:
                traces.setdefault(p.pid, []).append(
                    (round(time.perf_counter() - t0, 1), round(rss, 1), round(own, 1))
                )
        if time.perf_counter() - t0 >= next_trace:
            next_trace = time.perf_counter() - t0 + trace_s
        time.sleep(interval_s)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    fs, out = fsspec.core.url_to_fs(argv[argv.index("--out") + 1])  # a folder or e.g. s3://bucket/prefix
    manifest = json.loads(fs.cat_file(f"{out}/manifest.json")) if fs.exists(f"{out}/manifest.json") else None

    def peak(kind: str) -> float:
        return max((v for k, _, v in peaks.values() if k == kind), default=0.0)

    def private_peak(kind: str) -> float:
        return max((v for k, v in private.values() if k == kind), default=0.0)

    by_label: dict[str, float] = {}
    for kind, label, v in peaks.values():
        key = f"{kind}:{label}"
        by_label[key] = max(by_label.get(key, 0.0), v)
    return DemoRun(
        argv=argv,
        wall_s=wall,
        returncode=proc.returncode,
        manifest=manifest,
        driver_peak_mb=peak("driver"),
        worker_peak_mb=peak("worker"),
        ray_system_peak_mb=peak("ray_system"),
        driver_private_peak_mb=private_peak("driver"),
        worker_private_peak_mb=private_peak("worker"),
        processes=dict(sorted(by_label.items(), key=lambda kv: -kv[1])),
        stderr_tail=(stderr or "")[-2000:] + (stdout or "")[-500:],
        actor_traces=traces,
    )


def demo_argv(
    stac_url: str, out: Path, *, method: str, bbox=DEMO_BBOX, extra: list[str] | None = None
) -> list[str]:
    """`difffusr run` arguments of the demo job."""
    return [
        "run",
        "--stac-url",
        stac_url,
        "--bbox",
        ",".join(f"{v:.6f}" for v in bbox),
        "--datetime",
        DEMO_DATETIME,
        "--method",
        method,
        "--out",
        str(out),
        "--overwrite",
        "--quiet",
        *(extra or []),
    ]


def stac_server():
    """The loopback STAC API over the bundled catalog (a context manager yielding the server)."""
    sys.path.insert(0, str(REPO))
    from infra.local.stac_server import StacServer, StacServerConfig

    return StacServer(StacServerConfig(catalog=CATALOG))
