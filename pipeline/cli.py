"""The `difffusr` command line. User errors print one line and exit 2; bugs keep their traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable

from pipeline import __version__
from pipeline.errors import DiffFuSRError

EXIT_USER_ERROR = 2
_NEGATIVE_LIST = re.compile(r"^-\d[\d.,\s-]*$")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as DiffFuSRError-style one-liners with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"difffusr: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # "--bbox -8.1,52.3,-8.0,52.4" would read as an unknown option: glue a negative-number value to its flag.
        args = list(args or [])
        for i in range(len(args) - 1):
            if args[i] in ("--bbox",) and _NEGATIVE_LIST.match(args[i + 1]):
                args[i : i + 2] = [f"{args[i]}={args[i + 1]}", ""]
        return super().parse_args([a for a in args if a != ""], namespace)


def _add_search_args(p: argparse.ArgumentParser) -> None:
    from pipeline.catalog.query import DEFAULT_COLLECTION, EARTH_SEARCH_V1

    p.add_argument("--stac-url", default=EARTH_SEARCH_V1, help="STAC API root URL (default: Earth Search v1)")
    p.add_argument("--collection", default=DEFAULT_COLLECTION, help="collection id (default: sentinel-2-l2a)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--bbox", help="W,S,E,N in degrees (EPSG:4326)")
    where.add_argument("--aoi", help="GeoJSON file with the area of interest (its bounding box is used)")
    p.add_argument("--datetime", help="START/END, e.g. 2023-06-01/2023-06-30 (required)")
    p.add_argument("--max-cloud", type=float, default=None, help="maximum eo:cloud_cover of an item, percent")
    p.add_argument("--mgrs-tiles", default=None, help="only these MGRS tiles, e.g. 32TNT,32TMT")
    p.add_argument("--max-items", type=int, default=500, help="upper bound on items fetched")


def _query(args: argparse.Namespace):
    from pipeline.catalog.query import resolve_query
    from pipeline.errors import ConfigError

    if not args.datetime:
        raise ConfigError("--datetime START/END is required, e.g. --datetime 2023-06-01/2023-06-30")

    return resolve_query(stac_url=args.stac_url, collection=args.collection, bbox=args.bbox, aoi=args.aoi,
                         datetime_range=args.datetime, max_cloud=args.max_cloud, mgrs_tiles=args.mgrs_tiles,
                         max_items=args.max_items)


def _add_model_args(p: argparse.ArgumentParser, default_method: str) -> None:
    from pipeline.inference.methods import METHODS

    p.add_argument("--method", default=default_method, choices=METHODS,
                   help=f"difffusr = diffusion SR + fusion (learned); gs, bicubic = baselines (default {default_method})")
    p.add_argument("--steps", type=int, default=20, help="DDIM sampling steps of the diffusion SR (default 20)")
    p.add_argument("--sr-weights", default=None, help="diffusion SR checkpoint folder (default: shipped small model)")
    p.add_argument("--fusion-weights", default=None, help="fusion checkpoint folder (default: shipped small model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (outputs reproduce exactly)")
    p.add_argument("--dtype", default="uint16", choices=("uint16", "float32"),
                   help="GeoTIFF values: uint16 reflectance x 10000 (nodata 0), or float32 reflectance (nodata NaN)")
    p.add_argument("--tile-size", type=int, default=96, help="tile core, 10 m pixels, multiple of 6 (default 96)")
    p.add_argument("--halo", type=int, default=12, help="tile overlap margin, 10 m pixels, multiple of 6 (default 12)")


def _model_options(args: argparse.Namespace):
    from pipeline.inference.methods import MethodOptions

    return MethodOptions(sr_weights=args.sr_weights, fusion_weights=args.fusion_weights, steps=args.steps)


def cmd_search(argv: list[str]) -> int:
    from pipeline.catalog.search import search_items
    from pipeline.io.grid import resolve_grid
    from pipeline.run import select_items
    from pipeline.tiling.grid import TileLayout

    p = _Parser(prog="difffusr search", description="Show what `difffusr run` would process, without processing it.")
    _add_search_args(p)
    p.add_argument("--tile-size", type=int, default=96)
    p.add_argument("--halo", type=int, default=12)
    p.add_argument("--json", action="store_true", help="print the items as JSON")
    args = p.parse_args(argv)
    query = _query(args)
    items, dropped = select_items(search_items(query))
    grid = resolve_grid(query.bbox)
    layout = TileLayout(height=grid.height, width=grid.width, core=args.tile_size, halo=args.halo)
    if args.json:
        print(json.dumps({"items": [i["id"] for i in items], "skipped": dropped, "grid": grid.to_dict(),
                          "tiles": len(layout.tile_keys())}, indent=2))
        return 0
    for item in items:
        props = item["properties"]
        print(f"{item['id']}  {props.get('datetime')}  cloud={props.get('eo:cloud_cover')}")
    for item_id, why in dropped.items():
        print(f"skipped {item_id}: {why}")
    h, w = grid.output_shape()
    print(f"{len(items)} granule(s); AOI {grid.area_km2:.2f} km2 on {grid.crs}; {len(layout.tile_keys())} tile(s); "
          f"output {w} x {h} px x 12 bands at 2.5 m")
    return 0


def cmd_run(argv: list[str]) -> int:
    from pipeline.config import DEFAULT_METHOD, ComputeConfig, OutputConfig, RunConfig, TilingConfig
    from pipeline.run import run_job

    p = _Parser(prog="difffusr run", description="Region + dates -> 12-band 2.5 m analysis-ready mosaic.")
    _add_search_args(p)
    _add_model_args(p, DEFAULT_METHOD)
    p.add_argument("--out", required=True, help="output folder (local path or s3://bucket/prefix)")
    p.add_argument("--crs", default=None, help="output CRS (default: the AOI's UTM zone)")
    p.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster (default: start a local one)")
    p.add_argument("--workers", type=int, default=None, help="inference actors (default: one per GPU, or cores/2)")
    p.add_argument("--batch-tiles", type=int, default=4, help="tiles per inference call")
    p.add_argument("--skip-bad-assets", action="store_true", help="leave granules with unreadable assets out (reported at the end) instead of failing")
    p.add_argument("--keep-work", action="store_true", help="keep the working store (ingested tiles, predictions)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of a different job in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--plan", default=None,
                   help="run every pending unit of a `difffusr plan` file into --out/<tile>/<dates> (resumable)")
    args = p.parse_args(argv)
    if args.plan:  # the units bring their own bbox, dates and CRS; the query fields are placeholders
        args.bbox, args.aoi, args.datetime = "0,0,1,1", None, args.datetime or "2000-01-01/2000-01-02"
    cfg = RunConfig(
        query=_query(args),
        output=OutputConfig(out=args.out, dtype=args.dtype, keep_work=args.keep_work, overwrite=args.overwrite),
        method=args.method, model=_model_options(args), crs=args.crs, seed=args.seed,
        tiling=TilingConfig(core=args.tile_size, halo=args.halo),
        compute=ComputeConfig(ray_address=args.ray_address, workers=args.workers, batch_tiles=args.batch_tiles,
                              skip_bad_assets=args.skip_bad_assets),
    )
    if args.plan:
        from pipeline.run_plan import run_plan

        plan = run_plan(args.plan, cfg, progress=not args.quiet)
        print(f"plan: {plan.units} units: {plan.skipped_done} already done, {len(plan.completed)} completed, "
              f"{len(plan.empty)} without granules, {len(plan.failed)} failed")
        for key, why in plan.failed.items():
            print(f"  failed {key}: {why}")
        return 1 if plan.failed else 0
    summary = run_job(cfg, progress=not args.quiet)
    _print_run_summary(summary)
    return 0


def _print_run_summary(s) -> None:
    if s.already_complete:
        print(f"already complete: {s.out} holds the outputs of this exact job; nothing to do")
        return
    print("difffusr run: done")
    print(f"  area        {s.area_km2:.2f} km2")
    print(f"  granules    {len(s.granules)} used" + (f", {len(s.skipped_granules)} skipped" if s.skipped_granules else ""))
    for gid, why in s.skipped_granules.items():
        print(f"    skipped {gid}: {why}")
    resumed = sum(s.tiles_resumed.values())
    print(f"  tiles       {s.tiles} ({s.tiles_empty} without data" + (f", {resumed} stage-tiles resumed" if resumed else "") + ")")
    print("  time        " + ", ".join(f"{k} {v:.1f} s" for k, v in s.timings_s.items()))
    for name, url in s.outputs.items():
        print(f"  {name:<14}{url}")


def cmd_superres(argv: list[str]) -> int:
    from tqdm import tqdm

    from pipeline.config import DEFAULT_METHOD
    from pipeline.superres import superres_folder

    p = _Parser(prog="difffusr superres", description="Band GeoTIFFs of one scene -> one 12-band GeoTIFF at 4x the finest band.")
    p.add_argument("in_dir", help="folder with B01.tif ... B12.tif (any GSD with Sentinel-2's 1:2:6 ratios)")
    p.add_argument("out_tif", help="output GeoTIFF (bands in order B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12)")
    _add_model_args(p, DEFAULT_METHOD)
    args = p.parse_args(argv)
    bars: list = []  # created at the first tile, so that an input error prints nothing but its one line

    def on_tile(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=f"superres ({args.method})", unit="tile", file=sys.stderr))
        bars[0].n = done
        bars[0].refresh()

    summary = superres_folder(args.in_dir, args.out_tif, method=args.method, options=_model_options(args),
                              dtype=args.dtype, seed=args.seed, core=args.tile_size, halo=args.halo, on_tile=on_tile)
    for bar in bars:
        bar.close()
    print(f"wrote {summary['output']}: 12 x {summary['output_shape'][1]} x {summary['output_shape'][2]} px at "
          f"{summary['output_gsd_m']:g} m (input {summary['input_gsd_m']:g} m) in {summary['seconds']} s")
    return 0


def _delegate(module: str, func: str = "cli_main") -> Callable[[list[str]], int]:
    def call(argv: list[str]) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), func)(argv) or 0)

    return call


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (cmd_run, "region + dates -> 12-band 2.5 m mosaic (Zarr, COG, quicklook, STAC item, manifest)"),
    "search": (cmd_search, "what `run` would process, without processing it"),
    "superres": (cmd_superres, "one scene folder of band GeoTIFFs -> 12-band GeoTIFF at 4x"),
    "eval": (_delegate("pipeline.eval.cli"), "Wald-protocol and consistency evaluation with a report"),
    "train": (_delegate("pipeline.train.cli"), "train the diffusion SR (`train sr`) or fusion (`train fusion`) models"),
    "convert-checkpoint": (_delegate("pipeline.models.convert"), "convert the authors' published checkpoints"),
    "submit": (_delegate("pipeline.cluster.submit"), "send a run/train job to a Ray cluster"),
    "status": (_delegate("pipeline.cluster.submit", "cli_status"), "status of a submitted job"),
    "logs": (_delegate("pipeline.cluster.submit", "cli_logs"), "logs of a submitted job"),
    "plan": (_delegate("pipeline.cluster.plan"), "split a large region into work units with cost estimates"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("DIFFFUSR_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(f"difffusr {__version__}: Sentinel-2 all 12 bands to 2.5 m (DiffFuSR)\n\nusage: difffusr COMMAND ...\n")
        for name, (_, doc) in COMMANDS.items():
            print(f"  {name:<20}{doc}")
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"difffusr: error: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return COMMANDS[argv[0]][0](argv[1:])
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    except DiffFuSRError as exc:
        print(f"difffusr: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("difffusr: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
