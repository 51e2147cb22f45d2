"""Plan throughput: units per hour and the inference actors' busy fraction with 1 vs N units in flight.

    python -m benchmarks.plan_throughput --in-flight 1,3 --method bicubic \
        --json benchmarks/results/plan_throughput.json

The plan: every granule of the bundled catalog (4 real 1.2 km L2A patches) x two date windows that both hold
its date (the month, and a 20-day window inside it), i.e. 8 units of 4 tiles each, served by the loopback
STAC API of `infra/local`. For each in-flight count the same plan runs into a fresh root with
`difffusr run --plan --concurrent-units N` in a child process (one local Ray cluster, one actor pool for all
units); the figures come from the run ledger (`difffusr plan status --json`): units per hour between the first
start and the last finish, the actors' busy seconds (sum over units of the inference stage's call time) over
the wall of the run, and the plan's estimate against the actual inference seconds of the done units.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, write_json
from benchmarks.demo_run import CATALOG, REPO
from infra.local.stac_server import StacServer, StacServerConfig
from pipeline.cluster.plan import WorkUnit, write_plan


def bundled_units() -> list[WorkUnit]:
    """Two units per bundled granule: a window of most of its month and a 20-day window around its date
    (shifted by the granule's index, so that two granules of one MGRS square and date get distinct keys)."""
    units = []
    for idx, item_file in enumerate(sorted(CATALOG.glob("*/*.json"))):
        item = json.loads(item_file.read_text())
        w, s, e, n = item["bbox"]
        date = item["properties"]["datetime"][:10]
        month, day = date[:8], int(date[8:])
        start = max(1, day - 10 - idx)
        windows = [
            f"{month}{1 + idx:02d}/{month}{28 - idx:02d}",
            f"{month}{start:02d}/{month}{start + 19:02d}",
        ]
        epsg = int(item["properties"]["proj:epsg"])
        tile = item["properties"]["s2:mgrs_tile"]
        km2 = (e - w) * 111.32 * math.cos(math.radians((s + n) / 2)) * (n - s) * 110.57
        bbox = (w + 0.001, s + 0.001, e - 0.001, n - 0.001)
        units += [WorkUnit(tile_id=tile, epsg=epsg, bbox=bbox, datetime=win, area_km2=km2) for win in windows]
    keys = [u.key for u in units]
    assert len(set(keys)) == len(keys), keys
    return units


def run_plan_once(url: str, plan: Path, root: Path, in_flight: int, method: str) -> dict:
    argv = [
        "run", "--plan", str(plan), "--stac-url", url, "--method", method, "--out", str(root), "--quiet",
        "--concurrent-units", str(in_flight),
    ]  # fmt: skip
    cli = [sys.executable, "-m", "pipeline.cli"]
    t0 = time.perf_counter()
    run = subprocess.run([*cli, *argv], cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"plan_throughput: run failed ({in_flight} in flight): {run.stderr[-2000:]}")
    status = subprocess.run(
        [*cli, "plan", "status", str(root), "--plan", str(plan), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    st = json.loads(status.stdout)
    return {
        "in_flight": in_flight,
        "wall_s": round(wall, 2),
        "units": st["units"],
        "counts": st["counts"],
        "units_per_hour": st["units_per_hour"],
        "elapsed_s": st["elapsed_s"],
        "actor_busy_s": st["accelerator_s"],
        # one actor: its seconds in forward passes over the units' span (first start -> last finish)
        "actor_busy_fraction": round(st["accelerator_s"] / st["elapsed_s"], 4) if st["elapsed_s"] else None,
        "tiles": st["tiles"],
        "estimate_s": st.get("finished_estimate_s"),
        "actual_s": st.get("finished_actual_s"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--in-flight", default="1,3", help="comma-separated --concurrent-units values")
    p.add_argument("--method", default="bicubic")
    p.add_argument(
        "--rates", type=Path, help="a rates file for the plan's estimate (default: the built-in rate)"
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    units = bundled_units()
    rows = []
    with tempfile.TemporaryDirectory(prefix="difffusr-plan-bench-") as tmp:
        plan = Path(tmp) / "plan.json"
        rates = json.loads(args.rates.read_text()) if args.rates else {"gpu_seconds_per_km2": 1.0}
        write_plan(plan, units, {"rates": rates})
        server = StacServer(StacServerConfig(catalog=CATALOG))
        server.start()
        try:
            for n in (int(v) for v in args.in_flight.split(",")):
                rows.append(run_plan_once(server.url, plan, Path(tmp) / f"root_{n}", n, args.method))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()
    result = {"machine": machine(), "method": args.method, "units": len(units), "runs": rows}
    if len(rows) > 1 and rows[0]["units_per_hour"]:
        result["units_per_hour_ratio"] = round(rows[-1]["units_per_hour"] / rows[0]["units_per_hour"], 3)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
