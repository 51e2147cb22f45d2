"""`difffusr run --plan FILE --out ROOT`: run every pending work unit of a `difffusr plan` file.

Each unit is an ordinary `run` into `ROOT/<tile_id>/<start>_<end>` with the unit's bbox, dates and UTM CRS.
Units whose `manifest.json` exists are skipped (a unit with no granule gets a manifest with status "empty",
so it is not searched again); an interrupted unit resumes from its own tile markers. A failing unit is
reported and the plan goes on with the next one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.catalog.query import parse_datetime_range
from pipeline.cluster.plan import load_plan, pending_units, unit_output
from pipeline.cluster.runtime import start_ray
from pipeline.config import PlanRunConfig
from pipeline.errors import DiffFuSRError, EmptySearchError
from pipeline.io.outputs import OutputDir


@dataclass
class PlanSummary:
    units: int = 0
    skipped_done: int = 0
    completed: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run_plan(plan_file: str, base: PlanRunConfig, *, progress: bool = True) -> PlanSummary:
    """Run the pending units of a plan into `base.output.out`; `base` gives the catalog, method, options."""
    from pipeline.run import run_job, start_actors, stop_actors

    units = load_plan(plan_file)
    root = base.output.out
    todo = pending_units(units, root)
    summary = PlanSummary(units=len(units), skipped_done=len(units) - len(todo))
    if summary.skipped_done:
        print(f"plan: skipping {summary.skipped_done} of {len(units)} units already done", file=sys.stderr)
    started_ray = start_ray(base.compute.ray_address, object_store_bytes=256 * 2**20) if todo else False
    pool = start_actors(base) if todo else None  # one actor pool, its model loaded once, for every unit
    try:
        for n, unit in enumerate(todo, start=1):
            print(f"plan: unit {n}/{len(todo)} {unit.key}", file=sys.stderr)
            start, end = parse_datetime_range(unit.datetime)
            cfg = base.unit(
                bbox=unit.bbox, start=start, end=end, out=unit_output(root, unit), crs=f"EPSG:{unit.epsg}"
            )
            try:
                run_job(cfg, progress=progress, pool=pool)
                summary.completed.append(unit.key)
            except EmptySearchError as exc:
                OutputDir(cfg.output.out).write_json(
                    "manifest.json",
                    {
                        "status": "empty",
                        "unit": unit.key,
                        "reason": str(exc),
                        "finished": datetime.now(UTC).isoformat(),
                    },
                )
                summary.empty.append(unit.key)
            except DiffFuSRError as exc:
                summary.failed[unit.key] = str(exc)
                print(f"plan: unit {unit.key} failed: {exc}", file=sys.stderr)
    finally:
        if pool is not None:
            stop_actors(pool)
        if started_ray:
            import ray

            ray.shutdown()
    return summary
