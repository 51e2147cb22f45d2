"""How `difffusr run` scales with the region: per-tile cost of every stage, peak memory and disk at N tiles.

The input is any scene folder of single-band Sentinel-2 GeoTIFFs (B01.tif ... B12.tif, B8A.tif at their
native 10/20/60 m) or any STAC API. A scene folder is served as a one-item catalog (Earth Search v1 asset
keys, file:// hrefs) by the real loopback STAC API of `infra/local`. For each requested tile count N the
job runs on a square AOI at the scene centre holding about N tiles (core `--tile-size` 10 m pixels), in a
child process whose resident memory (driver, Ray workers) and output-folder size are sampled.

    python -m benchmarks.scale --scene PATH/TO/SCENE --tiles 25,100,400 --method bicubic \\
        --json benchmarks/results/scale_bicubic.json
    python -m benchmarks.scale --stac-url URL --center LON,LAT --datetime 2023-06-01/2023-06-30 --tiles 25,100

Reported per N: tiles, stage seconds and seconds per tile, driver / worker peak RSS (MiB) and peak private
memory (RSS minus shared resident pages), the inference actor's RSS every 2 s (growth vs a plateau), peak
output-folder bytes and bytes per tile, and the ratios of the largest N to the smallest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Self

import rasterio
from pyproj import Transformer

from benchmarks.common import machine, write_json
from benchmarks.demo_run import REPO, run_monitored
from pipeline.io.outputs import OutputDir
from pipeline.io.scene_files import find_band_file
from pipeline.tiling.grid import DEFAULT_HALO

#: Acquisition time given to a scene folder served as an item (a folder of GeoTIFFs carries none).
SCENE_DATETIME = "2016-01-01T00:00:00Z"


def scene_item(folder: Path, item_id: str, datetime: str = SCENE_DATETIME) -> dict:
    """A STAC item (Earth Search v1 asset keys, absolute file:// hrefs) for a folder of band GeoTIFFs."""
    import sys

    sys.path.insert(0, str(REPO))
    from infra.local.make_samples import ES_V1_BANDS, STAC_EXTENSIONS, band_asset, bbox_of, footprint_lonlat

    assets, grids = {}, {}
    for key, band, gsd, desc, wl, fwhm in ES_V1_BANDS:
        path = find_band_file(folder, band).resolve()  # the pipeline's own band-file rule
        with rasterio.open(path) as src:
            t = src.transform
            grids[band] = {
                "epsg": src.crs.to_epsg(),
                "shape": [src.height, src.width],
                "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            }
        assets[key] = band_asset(key, band, gsd, desc, wl, fwhm, grids[band], path.as_uri())
    geom = footprint_lonlat(grids["B02"]["epsg"], grids["B02"]["transform"], grids["B02"]["shape"])
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": STAC_EXTENSIONS,
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "geometry": geom,
        "bbox": bbox_of(geom),
        "properties": {"datetime": datetime, "eo:cloud_cover": 0.0, "proj:epsg": grids["B02"]["epsg"]},
        "links": [],
        "assets": assets,
    }


def scene_center(item: dict) -> tuple[float, float]:
    w, s, e, n = item["bbox"]
    return (w + e) / 2, (s + n) / 2


def square_bbox(center: tuple[float, float], side_m: float) -> tuple[float, float, float, float]:
    """A lon/lat box whose UTM footprint is a square of `side_m` around `center` (lon, lat)."""
    lon, lat = center
    zone = int((lon + 180) // 6) + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    fwd = Transformer.from_crs(4326, epsg, always_xy=True)
    inv = Transformer.from_crs(epsg, 4326, always_xy=True)
    x, y = fwd.transform(lon, lat)
    h = side_m / 2
    w, s = inv.transform(x - h, y - h)
    e, n = inv.transform(x + h, y + h)
    return (w, s, e, n)


def side_for_tiles(tiles: int, core_px: int) -> float:
    """AOI side (m) holding about `tiles` tiles of `core_px` 10 m pixels (a margin keeps it under k x k)."""
    k = max(1, round(math.sqrt(tiles)))
    return k * core_px * 10.0 - 150.0


@contextmanager
def scene_catalog(folder: Path) -> Iterator[str]:
    """Serve a scene folder as a one-item catalog on a loopback STAC API; yields the API URL."""
    import sys

    sys.path.insert(0, str(REPO))
    from infra.local.stac_server import StacServer, StacServerConfig

    item = scene_item(folder, item_id=f"scale-{folder.name}")
    with tempfile.TemporaryDirectory(prefix="difffusr-scale-") as tmp:
        cat = Path(tmp)
        coll = json.loads((REPO / "data" / "samples" / "catalog" / "collection.json").read_text())
        (cat / "collection.json").write_text(json.dumps(coll))
        (cat / item["id"]).mkdir()
        (cat / item["id"] / f"{item['id']}.json").write_text(json.dumps(item))
        with StacServer(StacServerConfig(catalog=cat)) as server:
            yield server.url, scene_center(item)


class DiskSampler:
    """Peak size in bytes of a folder tree, sampled every `interval_s` in a thread."""

    def __init__(self, root: Path, interval_s: float = 0.5) -> None:
        self.root, self.interval_s, self.peak = root, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _size(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._size())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.final = self._size()  # what the job left: its products (and the work store with --keep-work)


def run_at(url: str, center, tiles: int, out: str, args: argparse.Namespace, env: dict | None = None) -> dict:
    """One `difffusr run` of ~`tiles` tiles into `out` (a folder, or an object-store URL: no disk peak)."""
    bbox = square_bbox(center, side_for_tiles(tiles, args.tile_size))
    argv = [
        "run", "--stac-url", url, "--bbox", ",".join(f"{v:.6f}" for v in bbox), "--datetime", args.datetime,
        "--method", args.method, "--out", str(out), "--overwrite", "--quiet",
        "--tile-size", str(args.tile_size),
        *args.extra,
    ]  # fmt: skip
    folder = OutputDir(out)
    fs, root = folder.fs, folder.root
    if folder.is_local:
        Path(root).mkdir(parents=True, exist_ok=True)
    with DiskSampler(Path(root)) if folder.is_local else nullcontext() as disk:
        run = run_monitored(argv, timeout_s=args.timeout, env=env)
    if run.returncode != 0 or run.manifest is None:
        raise SystemExit(f"scale: difffusr run failed at {tiles} tiles: {run.stderr_tail}")
    m = run.manifest
    n = int(m["tiles"])
    stream = m.get("stream", {})
    stages = stream.get("stages", {})
    workers = (stages.get("inference") or {}).get("workers") or 1
    per_tile = {k: v["per_tile_s"] for k, v in stages.items() if v.get("per_tile_s") is not None}
    # CPU seconds per tile inside the tasks: the cost without the waits for cores other processes held
    cpu_per_tile = {k: v["cpu_per_tile_s"] for k, v in stages.items() if v.get("cpu_per_tile_s") is not None}
    # export per tile: the strip tasks during the stream (local --out) + the final stitch after it
    per_tile["export"] = round(per_tile.pop("export_strips", 0.0) + m["timings_s"]["export"] / n, 4)
    # What the wall would be if the stages did not overlap: every tile's ingest + mosaic + export cost, over
    # the CPUs that run them (the "stages overlap" bound is wall <= 1.5 x this).
    serial_bound = sum(per_tile.get(k, 0.0) for k in ("ingest", "mosaic", "export")) * n / args.cpus
    grid = m["grid"]
    return {
        # for `--rates`: output area (10 m cells of 100 m^2), the actors' seconds in calls, COG bytes
        "area_km2": grid["height"] * grid["width"] * 1e-4,
        "accelerator_s": (stages.get("inference") or {}).get("busy_s"),
        "cog_bytes": fs.size(f"{root}/mosaic.tif"),
        "steps": stream.get("steps"),
        "precision": stream.get("precision"),
        "requested_tiles": tiles,
        "tiles": n,
        "tiles_empty": m.get("tiles_empty", 0),
        "bbox": list(bbox),
        "wall_s": round(run.wall_s, 2),
        "timings_s": {k: round(v, 3) for k, v in m["timings_s"].items()},
        "per_tile_s": per_tile,
        "cpu_per_tile_s": cpu_per_tile,
        "stream": stream,
        "workers": workers,
        "stream_vs_serial_stage_cost": round(m["timings_s"]["total"] / max(serial_bound, 1e-9), 3),
        "driver_peak_mb": round(run.driver_peak_mb, 1),
        "worker_peak_mb": round(run.worker_peak_mb, 1),
        "ray_system_peak_mb": round(run.ray_system_peak_mb, 1),
        # RSS minus shared resident pages (object store, libraries): each process's own heap
        "driver_private_peak_mb": round(run.driver_private_peak_mb, 1),
        "worker_private_peak_mb": round(run.worker_private_peak_mb, 1),
        # the largest processes by peak RSS (which worker holds the worker peak)
        "top_processes_mb": {k: round(v, 1) for k, v in list(run.processes.items())[:6]},
        "disk_peak_bytes": disk.peak if disk else None,  # of the output folder; None for an object store
        "disk_peak_bytes_per_tile": round(disk.peak / n) if disk else None,
        # staging: the peak beyond the products the job leaves (work store, strips, the COG being written),
        # per tile of the AOI and per tile in flight (the stream's most open tiles at once)
        "staging_peak_bytes": disk.peak - disk.final if disk else None,
        "staging_peak_bytes_per_tile": round((disk.peak - disk.final) / n) if disk else None,
        "staging_peak_bytes_per_open_tile": (
            round((disk.peak - disk.final) / max(stream.get("peak_open_tiles") or 1, 1)) if disk else None
        ),
        # the TileWorker's RSS and private MiB over the run (every 2 s): growth vs a plateau
        "actor_traces_mb": {str(pid): trace for pid, trace in run.actor_traces.items()},
    }


def ratios(rows: list[dict]) -> dict:
    """Largest-N / smallest-N ratios of memory peaks, per-tile stage costs and disk per tile."""
    lo, hi = rows[0], rows[-1]
    out = {
        "tiles": f"{hi['tiles']} / {lo['tiles']}",
        "driver_peak": round(hi["driver_peak_mb"] / lo["driver_peak_mb"], 3),
        "worker_peak": round(hi["worker_peak_mb"] / max(lo["worker_peak_mb"], 1e-9), 3),
        "driver_private_peak": round(
            hi["driver_private_peak_mb"] / max(lo["driver_private_peak_mb"], 1e-9), 3
        ),
        "worker_private_peak": round(
            hi["worker_private_peak_mb"] / max(lo["worker_private_peak_mb"], 1e-9), 3
        ),
    }
    if hi["disk_peak_bytes_per_tile"] is not None:
        out["disk_peak_per_tile"] = round(
            hi["disk_peak_bytes_per_tile"] / max(lo["disk_peak_bytes_per_tile"], 1), 3
        )
        out["staging_peak_per_tile"] = round(
            hi["staging_peak_bytes_per_tile"] / max(lo["staging_peak_bytes_per_tile"], 1), 3
        )
    out["stream_vs_serial_stage_cost_at_largest"] = hi["stream_vs_serial_stage_cost"]
    for stage, v in hi["per_tile_s"].items():
        if lo["per_tile_s"].get(stage):
            out[f"per_tile_{stage}"] = round(v / lo["per_tile_s"][stage], 3)
    for stage, v in hi.get("cpu_per_tile_s", {}).items():
        if lo.get("cpu_per_tile_s", {}).get(stage):
            out[f"cpu_per_tile_{stage}"] = round(v / lo["cpu_per_tile_s"][stage], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scene", type=Path, help="folder of single-band GeoTIFFs B01.tif ... B12.tif, B8A.tif")
    src.add_argument("--stac-url", help="a STAC API (then --center and --datetime say where and when)")
    p.add_argument("--center", help="LON,LAT of the AOI centre (default: the scene centre)")
    p.add_argument("--datetime", default="2015-01-01/2017-12-31", help="START/END of the search")
    p.add_argument("--tiles", default="25,100,400", help="comma-separated tile counts (default 25,100,400)")
    p.add_argument("--tile-size", type=int, default=96, help="tile core, 10 m pixels (default 96)")
    p.add_argument("--method", default="bicubic", help="difffusr, gs or bicubic (default bicubic)")
    p.add_argument(
        "--out",
        default=None,
        help="where the runs write: a folder or an object-store URL such as s3://bucket/prefix, with the "
        "credentials of the environment (default: a temporary folder)",
    )
    p.add_argument(
        "--local-s3",
        action="store_true",
        help="write to a moto S3 server started on loopback for the benchmark (the export path of `--out s3://`)",
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray cluster")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--rates",
        type=Path,
        default=None,
        help="write the largest run's per-km2 rates here, for `difffusr plan --rates` on this hardware",
    )
    p.add_argument("extra", nargs="*", help="more `difffusr run` flags after --, e.g. -- --workers 2")
    args = p.parse_args(argv)
    counts = sorted(int(t) for t in args.tiles.split(","))
    source = scene_catalog(args.scene) if args.scene else _external(args.stac_url)
    with (
        tempfile.TemporaryDirectory(prefix="difffusr-scale-out-") as tmp,
        _output_store(args, tmp) as (root, env),
        source as (url, center),
    ):
        if args.center:
            center = tuple(float(v) for v in args.center.split(","))
        if center is None:
            raise SystemExit("scale: --center LON,LAT is required with --stac-url")
        rows = []
        for n in counts:
            rows.append(run_at(url, center, n, f"{root}/tiles_{n}", args, env))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": machine(),
        "method": args.method,
        "input": str(args.scene or args.stac_url),
        "out": "moto S3 on loopback" if args.local_s3 else str(args.out or "a temporary folder"),
        "runs": rows,
    }
    if len(rows) > 1:
        result["ratios_largest_vs_smallest"] = ratios(rows)
        print(json.dumps(result["ratios_largest_vs_smallest"]))
    if args.json:
        write_json(args.json, result)
    if args.rates:
        write_json(args.rates, rates_of(rows[-1], result["machine"], args))
    return 0


@contextmanager
def _output_store(args: argparse.Namespace, tmp: str) -> Iterator[tuple[str, dict | None]]:
    """(root URL of the runs' outputs, extra environment of the runs): `--out`, a moto S3 server's bucket with
    `--local-s3`, or `tmp`."""
    if not args.local_s3:
        yield str(args.out or tmp), None
        return
    import sys

    import boto3

    sys.path.insert(0, str(REPO))
    from infra.local.s3_server import S3Server

    with S3Server() as s3, s3.patched_env():
        boto3.client("s3").create_bucket(Bucket="difffusr-scale")
        yield "s3://difffusr-scale/runs", s3.env


def rates_of(row: dict, info: dict, args: argparse.Namespace) -> dict:
    """The rates file of one run (`pipeline.cluster.plan.rates_document`)."""
    from pipeline.cluster.plan import rates_document

    device = (
        f"cuda: {info['cuda']}" if info.get("cuda") else f"cpu: {info.get('cpu_model')}, {args.cpus} cores"
    )
    return rates_document(
        accelerator_s=row["accelerator_s"],
        cog_bytes=row["cog_bytes"],
        area_km2=row["area_km2"],
        device=device,
        method=args.method,
        precision=row["precision"],
        steps=row["steps"],
        tiles=row["tiles"],
        tile_core=args.tile_size,
        tile_halo=DEFAULT_HALO,  # the run above keeps the default halo
        input=str(args.scene or args.stac_url),
    )


@contextmanager
def _external(url: str) -> Iterator[tuple[str, None]]:
    yield url, None


if __name__ == "__main__":
    raise SystemExit(main())
