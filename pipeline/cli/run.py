"""`difffusr run`, `search` and `superres`: parsers, config building and the printed summaries.

Every flag is turned into a validated config before anything else happens (search, ingest, model load), so
a bad value, or weights of the wrong kind, fail at once with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipeline.cli.args import (
    Parser,
    add_grid_arg,
    add_model_args,
    add_search_args,
    add_tiling_args,
    catalog_from_args,
    default_of,
    model_options_from_args,
    query_from_args,
    tiling_from_args,
)
from pipeline.errors import ConfigError


def search_parser() -> Parser:
    p = Parser(
        prog="difffusr search", description="Show what `difffusr run` would process, without processing it."
    )
    add_search_args(p)
    add_tiling_args(p)
    add_grid_arg(p)
    p.add_argument("--json", action="store_true", help="print the items as JSON")
    return p


def cmd_search(argv: list[str]) -> int:
    """`difffusr search`: the granules, skipped items, grid and tile count of a query."""
    args = search_parser().parse_args(argv)
    query = query_from_args(args)
    tiling = tiling_from_args(args)

    from pipeline.catalog.search import search_items
    from pipeline.io.grid import job_grid
    from pipeline.run import select_items

    items, dropped = select_items(search_items(query))
    tiles = job_grid(query.bbox, core=tiling.core, halo=tiling.halo, anchor=tiling.grid)
    grid, layout = tiles.grid, tiles.layout
    if args.json:
        print(
            json.dumps(
                {
                    "items": [i["id"] for i in items],
                    "skipped": dropped,
                    "grid": grid.to_dict(),
                    "tiles": len(layout.tile_keys()),
                },
                indent=2,
            )
        )
        return 0
    for item in items:
        props = item["properties"]
        print(f"{item['id']}  {props.get('datetime')}  cloud={props.get('eo:cloud_cover')}")
    for item_id, why in dropped.items():
        print(f"skipped {item_id}: {why}")
    h, w = grid.output_shape()
    tiles = len(layout.tile_keys())
    print(
        f"{len(items)} granule(s); AOI {grid.area_km2:.2f} km2 on {grid.crs}; {tiles} tile(s); "
        f"output {w} x {h} px x 12 bands at 2.5 m"
    )
    return 0


def run_parser() -> Parser:
    from pipeline.config import ComputeConfig

    p = Parser(prog="difffusr run", description="Region + dates -> 12-band 2.5 m analysis-ready mosaic.")
    add_search_args(p)
    add_model_args(p)
    add_grid_arg(p)
    p.add_argument("--out", required=True, help="output folder (local path or s3://bucket/prefix)")
    p.add_argument("--crs", default=None, help="output CRS (default: the AOI's UTM zone)")
    p.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster (default: $RAY_ADDRESS, else start a local one)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=default_of(ComputeConfig, "workers"),
        help="inference actors (default: one per GPU, or cores/2)",
    )
    p.add_argument(
        "--batch-tiles",
        type=int,
        default=default_of(ComputeConfig, "batch_tiles"),
        help="tiles per inference call (default %(default)s)",
    )
    p.add_argument(
        "--skip-bad-assets",
        action="store_true",
        help="leave granules with unreadable assets out (reported at the end) instead of failing",
    )
    p.add_argument(
        "--keep-work", action="store_true", help="keep the working store (ingested tiles, predictions)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs of a different job in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="with --plan: attempts of a unit (across reruns) before it is marked dead (default %(default)s)",
    )
    p.add_argument("--retry-dead", action="store_true", help="with --plan: try the units marked dead again")
    p.add_argument(
        "--concurrent-units",
        type=int,
        default=None,
        help="with --plan: units in flight at once, sharing the inference actors (default: one per actor)",
    )
    p.add_argument(
        "--plan",
        default=None,
        help="run every pending unit of a `difffusr plan` file into --out/<tile>/<dates> (resumable); "
        "the units bring their own area, dates and CRS",
    )
    return p


def _job_fields(args: argparse.Namespace) -> dict:
    """The `JobConfig` fields of the run flags (everything but the area, dates and CRS); the units of a plan
    lie on their zone's tile lattice unless --grid says otherwise (adjacent units then meet seamlessly)."""
    from pipeline.config import ComputeConfig, OutputConfig

    return {
        "output": OutputConfig(
            out=args.out, dtype=args.dtype, keep_work=args.keep_work, overwrite=args.overwrite
        ),
        "method": args.method,
        "model": model_options_from_args(args),
        "seed": args.seed,
        "tiling": tiling_from_args(args, default_grid="zone" if args.plan else "aoi"),
        "compute": ComputeConfig(
            ray_address=args.ray_address,
            workers=args.workers,
            batch_tiles=args.batch_tiles,
            skip_bad_assets=args.skip_bad_assets,
        ),
    }


def cmd_run(argv: list[str]) -> int:
    """`difffusr run`: one job, or with --plan every pending unit of a plan file."""
    from pipeline.config import PlanRunConfig, RunConfig

    args = run_parser().parse_args(argv)
    if args.plan:
        given = [
            flag
            for flag, value in (
                ("--bbox", args.bbox),
                ("--aoi", args.aoi),
                ("--datetime", args.datetime),
                ("--crs", args.crs),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"--plan {args.plan!r} brings each unit's area, dates and CRS; drop {', '.join(given)}"
            )
        plan_cfg = PlanRunConfig(catalog=catalog_from_args(args), **_job_fields(args))
        from pipeline.run_plan import RetryPolicy

        policy = RetryPolicy(
            max_attempts=args.max_attempts,
            retry_dead=args.retry_dead,
            concurrent_units=args.concurrent_units,
        )
        return _run_plan(args.plan, plan_cfg, progress=not args.quiet, policy=policy)
    cfg = RunConfig(query=query_from_args(args), crs=args.crs, **_job_fields(args))

    from pipeline.run import run_job

    _print_run_summary(run_job(cfg, progress=not args.quiet))
    return 0


def _run_plan(plan_file: str, cfg, *, progress: bool, policy) -> int:
    from pipeline.run_plan import run_plan

    plan = run_plan(plan_file, cfg, progress=progress, policy=policy)
    print(
        f"plan: {plan.units} units: {plan.skipped_done} already done, {len(plan.completed)} completed, "
        f"{len(plan.empty)} without granules, {len(plan.failed)} failed"
        + (f", {len(plan.skipped_dead)} dead skipped" if plan.skipped_dead else "")
        + (f", {len(plan.running_elsewhere)} running elsewhere" if plan.running_elsewhere else "")
    )
    if plan.collection:
        print(f"  collection  {plan.collection}")
    for key, why in plan.failed.items():
        print(f"  dead {key} after {policy.max_attempts} attempts: {why}")
    if plan.failed or plan.skipped_dead:
        print(
            f"  see `difffusr plan status {cfg.output.out}`; rerun with --retry-dead to try dead units again"
        )
    return 1 if plan.failed or plan.skipped_dead else 0


def _print_run_summary(s) -> None:
    if s.already_complete:
        print(f"already complete: {s.out} holds the outputs of this exact job; nothing to do")
        return
    print("difffusr run: done")
    print(f"  area        {s.area_km2:.2f} km2")
    skipped = f", {len(s.skipped_granules)} skipped" if s.skipped_granules else ""
    print(f"  granules    {len(s.granules)} used{skipped}")
    for gid, why in s.skipped_granules.items():
        print(f"    skipped {gid}: {why}")
    resumed = sum(s.tiles_resumed.values())
    resumed_text = f", {resumed} stage-tiles resumed" if resumed else ""
    print(f"  tiles       {s.tiles} ({s.tiles_empty} without data{resumed_text})")
    t = s.timings_s
    print(
        f"  time        {t.get('total', 0):.1f} s: search {t.get('search', 0):.1f} s, stream "
        f"{t.get('stream', 0):.1f} s (ingest, inference and mosaic overlap), "
        f"export {t.get('export', 0):.1f} s"
    )
    stages = (s.stream or {}).get("stages", {})
    rates = [
        f"{name} {v['tiles_per_s']:.2f} tiles/s ({v['per_tile_s']:.2f} s/tile)"
        for name, v in stages.items()
        if v.get("tiles_per_s") and v.get("per_tile_s") is not None
    ]
    if rates:
        print("  throughput  " + ", ".join(rates))
    if s.stream.get("actor_busy_fraction") is not None:
        print(
            f"  model       {s.stream['actor_busy_fraction']:.0%} busy "
            f"({(s.stream.get('model_busy_fraction') or 0):.0%} in forward passes), "
            f"batch {s.stream['batch_tiles']} tiles, "
            f"{s.stream.get('precision')}, steps {s.stream.get('steps') or 'from the weights'}"
        )
    summary = (s.quality or {}).get("summary", {})
    if summary.get("l1_10m", {}).get("tiles"):
        l1 = "/".join(f"{summary[f'l1_{g}']['mean']:.2g}" for g in ("10m", "20m", "60m"))
        sam = "/".join(f"{summary[f'sam_{g}']['mean']:.2g}" for g in ("10m", "20m", "60m"))
        spread = summary.get("spread_mean", {}).get("mean")
        spread_text = f", spread {spread:.2g}" if spread is not None else ""
        print(f"  quality     degrade-back L1 {l1} (10/20/60 m), SAM {sam} deg{spread_text} (tile means)")
    for name, url in s.outputs.items():
        print(f"  {name:<16}{url}")  # the longest name, uncertainty.tif, + a space


def superres_parser() -> Parser:
    p = Parser(
        prog="difffusr superres",
        description="Band GeoTIFFs of one scene -> one 12-band GeoTIFF at 4x the finest band.",
    )
    p.add_argument("in_dir", help="folder with B01.tif ... B12.tif (any GSD with Sentinel-2's 1:2:6 ratios)")
    p.add_argument(
        "out_tif", help="output GeoTIFF (bands in order B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12)"
    )
    add_model_args(p)
    return p


def cmd_superres(argv: list[str]) -> int:
    """`difffusr superres IN_DIR OUT.tif`."""
    from pipeline.config import check_seed, check_uncertainty

    args = superres_parser().parse_args(argv)
    options = model_options_from_args(args)
    tiling = tiling_from_args(args)
    check_seed(args.seed)
    check_uncertainty(args.method, options.uncertainty)

    from tqdm import tqdm

    from pipeline.superres import superres_folder

    bars: list = []  # created at the first tile, so that an input error prints nothing but its one line

    def on_tile(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=f"superres ({args.method})", unit="tile", file=sys.stderr))
        bars[0].n = done
        bars[0].refresh()

    summary = superres_folder(
        args.in_dir,
        args.out_tif,
        method=args.method,
        options=options,
        dtype=args.dtype,
        seed=args.seed,
        core=tiling.core,
        halo=tiling.halo,
        on_tile=on_tile,
    )
    for bar in bars:
        bar.close()
    print(
        f"wrote {summary['output']}: 12 x {summary['output_shape'][1]} x {summary['output_shape'][2]} px at "
        f"{summary['output_gsd_m']:g} m (input {summary['input_gsd_m']:g} m) in {summary['seconds']} s"
    )
    if "uncertainty" in summary:
        print(f"wrote {summary['uncertainty']}: per-pixel spread over {options.uncertainty} draws (float32)")
    return 0
