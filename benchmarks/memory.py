"""Peak memory of the driver and of a worker for the same job on 1x and 4x the area.

`difffusr run` streams: the driver holds the plan and per-tile bookkeeping, each worker one batch of
tiles, so both peaks should stay flat when the region grows. The job runs twice on the bundled catalog
(loopback STAC API, local Ray): on the central quarter of the demo AOI (1x) and on the whole demo AOI (4x),
while psutil samples the RSS of the driver and of every Ray process (see benchmarks/demo_run.py).

    python -m benchmarks.memory --method gs --json benchmarks/results/memory_gs.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import machine, write_json
from benchmarks.demo_run import DEMO_BBOX, demo_argv, quarter_bbox, run_monitored, stac_server


def measure(
    method: str, out_root: Path, *, extra: list[str] | None = None, bboxes: dict | None = None
) -> dict:
    """Run the job once per area; returns peaks (MiB) and stage times per area."""
    bboxes = bboxes or {"1x": quarter_bbox(DEMO_BBOX), "4x": DEMO_BBOX}
    rows = {}
    with stac_server() as server:
        for label, bbox in bboxes.items():
            run = run_monitored(
                demo_argv(server.url, out_root / label, method=method, bbox=bbox, extra=extra)
            )
            if run.returncode != 0 or run.manifest is None:
                raise RuntimeError(f"difffusr run failed for {label}: {run.stderr_tail}")
            m = run.manifest
            rows[label] = {
                "bbox": list(bbox),
                "tiles": m["tiles"],
                "grid": m.get("grid"),
                "wall_s": run.wall_s,
                "timings_s": m["timings_s"],
                "driver_peak_mb": run.driver_peak_mb,
                "worker_peak_mb": run.worker_peak_mb,
                "ray_system_peak_mb": run.ray_system_peak_mb,
                "processes_peak_mb": run.processes,
                "argv": run.argv,
            }
    return rows


def markdown(rows: dict) -> str:
    lines = [
        "| area | tiles | driver peak RSS MiB | worker peak RSS MiB | Ray system peak MiB | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['tiles']} | {r['driver_peak_mb']:.0f} | {r['worker_peak_mb']:.0f} | "
            f"{r['ray_system_peak_mb']:.0f} | {r['wall_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    p.add_argument("--method", default="gs")
    p.add_argument("--out", default="/tmp/difffusr_bench_memory", help="output root of the two jobs")
    p.add_argument("--run-args", default="", help="extra `difffusr run` arguments, space-separated")
    p.add_argument("--json", default=None, help="JSON output path")
    args = p.parse_args(argv)
    rows = measure(args.method, Path(args.out), extra=args.run_args.split() if args.run_args else None)
    write_json(args.json, {"benchmark": "memory", "method": args.method, "areas": rows, "machine": machine()})
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
