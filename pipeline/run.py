"""`difffusr run`: search -> ingest (Ray tasks) -> inference (Ray actors) -> mosaic (Ray tasks) -> exports.

Wiring and counting only: the pixel work lives in io/, inference/, tiling/ and mosaic/. Every stage skips
tiles whose done marker exists, so a rerun of the same job into the same `--out` resumes where it stopped.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.catalog.assets import map_band_assets
from pipeline.catalog.search import search_items
from pipeline.cluster.runtime import (
    INFERENCE_WORKER_ENV,
    LIGHT_ACTOR_ENV,
    forwarded_env,
    release_free_heap,
    start_ray,
)
from pipeline.config import LIGHT_METHODS, JobConfig, MethodOptions, RunConfig
from pipeline.errors import AssetError, ConfigError, DataError, DiffFuSRError, OutputError
from pipeline.io.cog import assemble_cog_to
from pipeline.io.grid import JobGrid, SceneGrid, job_grid
from pipeline.io.mosaic_store import create_mosaic_store
from pipeline.io.outputs import OutputDir
from pipeline.io.work_store import DONE, TODO, WorkStore
from pipeline.mosaic.metadata import output_item, versions
from pipeline.mosaic.provenance import code_version, input_provenance, sr_default_steps, weights_provenance
from pipeline.mosaic.quality import item_properties, quality_summary, tile_table, write_quality_png
from pipeline.mosaic.quicklook import write_quicklook
from pipeline.stream import StreamResult, StreamTasks, TileStream, read_markers, stream_window
from pipeline.tiling.grid import TileLayout

TRANSIENT_ERRORS = (OSError, TimeoutError, ConnectionError)
#: Folder of the COG's strip GeoTIFFs inside --out (removed once the COG is published).
STRIPS = ".cog-strips"
#: Every file a job publishes into --out (removed by --overwrite).
PRODUCTS = (
    "mosaic.zarr",
    "mosaic.tif",
    "uncertainty.tif",
    "quicklook.png",
    "quality.png",
    "item.json",
    "manifest.json",
)


@dataclass
class RunSummary:
    """What a run did; printed at the end and stored in manifest.json."""

    out: str
    area_km2: float = 0.0
    granules: list[str] = field(default_factory=list)
    skipped_granules: dict[str, str] = field(default_factory=dict)
    tiles: int = 0
    tiles_empty: int = 0
    tiles_resumed: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    already_complete: bool = False
    stream: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def _stream_report(cfg: RunConfig, result: StreamResult) -> dict[str, Any]:
    """Throughput of the stream for the manifest and the summary."""
    return {
        "stages": result.stages,
        # calls in flight on the actors / forward passes only, over (model loaded -> the stream's last write)
        "actor_busy_fraction": result.actor_busy_fraction,
        "model_busy_fraction": result.model_busy_fraction,
        "model_s": result.model_s,
        "window_tiles": result.window,
        "peak_open_tiles": result.peak_open_tiles,
        "batch_tiles": cfg.compute.batch_tiles,
        "steps": result.model.get("steps", cfg.model.steps),
        "precision": result.model.get("precision", cfg.model.precision),
        "self_ensemble": result.model.get("self_ensemble", cfg.model.self_ensemble),
        "uncertainty_draws": cfg.model.uncertainty or None,
        "wall_s": round(result.wall_s, 3),
        "actor_pids": result.model.get("pids", []),
    }


def select_items(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Keep the items that carry all 12 bands with the same asset keys; say why others were dropped."""
    kept, dropped = [], {}
    reference: dict[str, str] | None = None
    for item in items:
        try:
            mapping = {b: k for b, k in map_band_assets(item).items() if b != "SCL"}
        except AssetError as exc:
            dropped[item["id"]] = str(exc)
            continue
        reference = reference or mapping
        if mapping != reference:
            dropped[item["id"]] = "asset keys differ from the other items (mixed providers in one collection)"
            continue
        kept.append(item)
    if not kept:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:3])
        raise AssetError(f"none of the {len(items)} items found can be used: {reasons}")
    return kept, dropped


def _call_with_env(env: dict[str, str], fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """Run `fn` in a Ray worker after applying the driver's credentials/endpoints.

    Returns (its result, the seconds it ran, the CPU seconds of the worker process meanwhile): the stage's
    per-tile cost, without the time the task waited in Ray's queue, and (CPU) without the time other
    processes held the cores. The credentials travel as a task argument rather than
    `runtime_env["env_vars"]`, which Ray's runtime-env agent writes, values included, into its log files.
    """
    os.environ.update(env)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        value = fn(*args, **kwargs)
    finally:
        release_free_heap()  # the task workers live for the whole job: keep their memory flat
    return value, time.perf_counter() - t0, time.process_time() - c0


def _get(ref: Any) -> Any:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, DiffFuSRError):
            raise exc.cause from None
        raise


@dataclass
class ActorPool:
    """The inference actors of a job, or of every unit of a `--plan` (the model loads once)."""

    actors: list[Any]
    device: str


def start_actors(cfg: JobConfig, *, at_most: int | None = None) -> ActorPool:
    """Start the inference actors (one per GPU, else one per 2 CPUs, or `--workers`); models load now."""
    import ray

    from pipeline.inference.actors import TileWorker

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    n_workers = cfg.compute.workers or (gpus or max(1, cpus // 2))
    if at_most is not None:
        n_workers = min(n_workers, at_most)
    device = "cuda" if gpus else "cpu"
    if cfg.model.precision == "fp16" and not gpus:
        raise ConfigError(
            "--precision fp16 needs a CUDA device and this Ray cluster has no GPU; use bf16 or fp32"
        )
    options = MethodOptions(**{**cfg.model.__dict__, "device": device})
    light = cfg.method in LIGHT_METHODS  # no model: the actor's CPU would sit idle while tasks queue for it
    actor_cls = ray.remote(TileWorker).options(
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus or light else 1,
        max_restarts=2,
        max_task_retries=2,
        # the heap-keeping allocator pays off for the networks' large activations; a light method has none,
        # and under it the actor's RSS only ever grows (issue 12: worker peak 1.13-1.45x at 420 vs 25 tiles)
        runtime_env={"env_vars": dict(LIGHT_ACTOR_ENV if light else INFERENCE_WORKER_ENV)},
    )
    threads = None if gpus else 1 if light else max(1, cpus // max(n_workers, 1))
    env = forwarded_env()
    actors = [
        actor_cls.remote(
            cfg.method,
            options,
            None,
            cfg.seed,
            threads,
            env,
            max_samples=cfg.compute.batch_tiles,
        )
        for _ in range(n_workers)
    ]
    return ActorPool(actors=actors, device=device)


def stop_actors(pool: ActorPool) -> None:
    import ray

    for actor in pool.actors:
        ray.kill(actor)


def _stream(
    cfg: RunConfig,
    items,
    grid: SceneGrid,
    layout: TileLayout,
    store: WorkStore,
    mosaic_url: str,
    strip_dir: str | None,
    progress: bool,
    pool: ActorPool | None,
) -> StreamResult:
    """Ray wiring of the streaming engine: the ingest/mosaic tasks and the inference actor pool (the given
    one, or one started and stopped for this job)."""
    import ray

    from pipeline.ingest.stage import ingest_tile
    from pipeline.mosaic.assemble import assemble_core

    task = ray.remote(_call_with_env).options(max_retries=3, retry_exceptions=list(TRANSIENT_ERRORS))
    spread = cfg.model.uncertainty > 1
    items_ref, env = ray.put(items), forwarded_env()
    skip = cfg.compute.skip_bad_assets
    cpus = int(ray.cluster_resources().get("CPU", 1))
    markers = read_markers(store)  # once: a granule's marker arrays take seconds to read
    own_pool = pool is None
    if own_pool:
        ing, inf, _ = markers
        may_infer = int(((ing == TODO) | ((ing == DONE) & (inf != DONE))).sum())
        pool = start_actors(cfg, at_most=may_infer)
    actors, device, n_workers = pool.actors, pool.device, len(pool.actors)
    strip, strip_rows = None, []
    if strip_dir is not None:  # the COG's strips are encoded by tasks as soon as their tile rows are final
        from pipeline.io.cog import strip_tile_rows, write_strips

        dtype, unc = cfg.output.dtype, spread
        strip = lambda g: task.remote(
            env, write_strips, mosaic_url, strip_dir, layout, g, dtype=dtype, uncertainty=unc
        )
        strip_rows = strip_tile_rows(layout)
    tasks = StreamTasks(
        ingest=lambda k: task.remote(
            env, ingest_tile, items_ref, grid, layout, k, store, skip_bad_granules=skip
        ),
        mosaic=lambda k: task.remote(env, assemble_core, store, mosaic_url, layout, k, spread=spread),
        actors=actors,
        get=_get,
        wait=ray.wait,
        strip=strip,
        strip_rows=strip_rows,
    )
    # Ingest/mosaic tasks in flight: enough to keep every CPU busy while the actors hold theirs.
    max_tasks = max(2, 2 * cpus)
    stream = TileStream(
        layout,
        store,
        tasks,
        batch_tiles=cfg.compute.batch_tiles,
        window=stream_window(layout, cfg.compute.batch_tiles, n_workers, cpus),
        max_tasks=max_tasks,
        free_work=not cfg.output.keep_work,
        progress=progress,
        device=device,
        method=cfg.method,
        markers=markers,
    )
    try:
        return stream.run()
    finally:
        if own_pool:
            stop_actors(pool)


def _export(
    cfg: RunConfig,
    out: OutputDir,
    tiles: JobGrid,
    store: WorkStore,
    fingerprint: str,
    items,
    summary: RunSummary,
) -> None:
    import zarr

    grid, layout = tiles.grid, tiles.layout
    mosaic_url = out.join("mosaic.zarr")
    with warnings.catch_warnings():
        # "consolidated metadata is not in the v3 spec": xarray reads it anyway
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(mosaic_url)
    staging = out.local_staging()
    spread = cfg.model.uncertainty > 1
    figures = store.read_quality()  # (rows, cols, Q): the actors' per-tile figures, read once
    try:
        # The stitch runs in a Ray worker: its GDAL memory never lands in the driver, and for a remote --out
        # the task fetches the strips and uploads the COG itself (the driver's disk is not the task's).
        import ray

        retry = {"max_retries": 3, "retry_exceptions": list(TRANSIENT_ERRORS)}  # idempotent: staged, renamed
        stitch = ray.remote(_call_with_env).options(num_cpus=1, **retry)
        args = (forwarded_env(), assemble_cog_to, out.join(STRIPS), out.url, grid, layout)
        ref = stitch.remote(*args, dtype=cfg.output.dtype, uncertainty=spread, mosaic_url=mosaic_url)
        _, seconds, _ = _get(ref)
        summary.timings_s["export_stitch"] = seconds
        png = os.path.join(staging, "quicklook.png")
        write_quicklook(store.read_overview(), png)  # written core by core during the mosaic
        out.publish(png, "quicklook.png")
        qa_png = os.path.join(staging, "quality.png")
        write_quality_png(figures, qa_png)
        out.publish(qa_png, "quality.png")
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    quality = quality_summary(figures)
    summary.quality = {"summary": quality, **tile_table(figures)}
    summary.provenance = _provenance(cfg, items, fingerprint, summary.stream)
    out.write_json(
        "item.json",
        output_item(
            fingerprint=fingerprint,
            grid=grid,
            footprint=tiles.aoi,
            start=cfg.query.start,
            end=cfg.query.end,
            method=cfg.method,
            dtype=cfg.output.dtype,
            inputs=items,
            uncertainty=spread,
            quality=item_properties(quality),
            provenance={f"difffusr:{k}": v for k, v in summary.provenance.items()},
        ),
    )
    summary.outputs = {n: out.join(n) for n in PRODUCTS if spread or n != "uncertainty.tif"}


def _provenance(cfg: RunConfig, items, fingerprint: str, stream: dict[str, Any]) -> dict[str, Any]:
    """What reproduces the product exactly (STAC item `difffusr:` properties and the manifest)."""
    learned = cfg.method not in LIGHT_METHODS
    doc: dict[str, Any] = {
        "fingerprint": fingerprint,
        "inputs": input_provenance(items),
        "seed": cfg.seed,
        "seed_rule": (
            "tile: seed + row * cols + col; "
            if cfg.tiling.grid == "aoi"
            else "tile: seed + (lattice row + 2**24) * 2**25 + (lattice col + 2**24); "
        )
        + "draw k > 0: numpy SeedSequence(tile seed, spawn_key=(k,))",
        "tiling": {"core": cfg.tiling.core, "halo": cfg.tiling.halo, "grid": cfg.tiling.grid},
        "code": code_version(),
    }
    if learned:
        doc["weights"] = weights_provenance(cfg.model.sr_weights, cfg.model.fusion_weights)
        doc["sampler"] = {
            "name": "DDIM",
            "eta": 0.0,
            "steps": stream.get("steps") or sr_default_steps(cfg.model.sr_weights),
            "draws": cfg.model.uncertainty or 1,
        }
        doc["precision"] = stream.get("precision", cfg.model.precision)
        # per fusion group, as the actors resolved it (the option, or the fusion weights' setting)
        doc["fusion_self_ensemble"] = stream.get("self_ensemble", cfg.model.self_ensemble)
    return doc


def run_job(cfg: RunConfig, *, progress: bool = True, pool: ActorPool | None = None) -> RunSummary:
    """Run one region/date job end to end (resuming a previous attempt of the same job)."""
    started = datetime.now(UTC)
    summary = RunSummary(out=cfg.output.out)
    out = OutputDir(cfg.output.out)
    out.check_writable()
    t0 = time.perf_counter()
    tiles = job_grid(
        cfg.query.bbox, cfg.crs, core=cfg.tiling.core, halo=cfg.tiling.halo, anchor=cfg.tiling.grid
    )
    grid, layout = tiles.grid, tiles.layout
    query = cfg.query
    if cfg.tiling.grid == "zone":  # a granule that reaches only a halo shapes a tile: every job must see it
        query = replace(query, bbox=tiles.search_bbox())
    found = search_items(query)
    items, summary.skipped_granules = select_items(found)
    summary.granules = [i["id"] for i in items]
    summary.timings_s["search"] = time.perf_counter() - t0
    summary.area_km2, summary.tiles = tiles.aoi.area_km2, len(layout.tile_keys())
    fingerprint = cfg.fingerprint(summary.granules)
    if out.exists("manifest.json"):
        manifest = out.read_json("manifest.json")
        if manifest.get("fingerprint") == fingerprint and manifest.get("status") == "complete":
            summary.already_complete = True
            summary.outputs = manifest.get("outputs", {})
            return summary
        if manifest.get("fingerprint") != fingerprint and not cfg.output.overwrite:
            raise OutputError(
                f"--out {cfg.output.out!r} holds the outputs of a different job; "
                "use a new --out or --overwrite"
            )
    if cfg.output.overwrite:
        for name in ("work.zarr", STRIPS, *PRODUCTS):
            out.remove(name)
    fresh = not out.exists("work.zarr")
    out.makedirs()
    store = WorkStore(out.join("work.zarr"))
    store.create(layout, fingerprint, spread=cfg.model.uncertainty > 1)
    mosaic_url = out.join("mosaic.zarr")
    started_ray = start_ray(cfg.compute.ray_address, object_store_bytes=256 * 2**20)
    try:
        create_mosaic_store(
            mosaic_url,
            grid,
            layout,
            attrs={"title": "difffusr 2.5 m Sentinel-2 mosaic", "job": fingerprint, "method": cfg.method},
            uncertainty=cfg.model.uncertainty > 1,
            dtype=cfg.output.dtype,
        )
        # The COG's strips are written by tasks during the stream, next to the outputs (local or remote).
        strip_dir = out.join(STRIPS)
        result = _stream(cfg, items, grid, layout, store, mosaic_url, strip_dir, progress, pool)
        summary.skipped_granules.update(result.failed_granules)
        summary.tiles_resumed = result.resumed
        summary.tiles_empty = result.tiles_empty
        summary.stream = _stream_report(cfg, result)
        for stage, name in (("ingest", "ingest"), ("inference", "inference"), ("mosaic", "mosaic")):
            summary.timings_s[name] = result.stages[stage]["span_s"]
        summary.timings_s["stream"] = result.wall_s
        if summary.tiles_empty == summary.tiles:
            raise DataError(
                f"every pixel of the AOI is nodata or cloud in the {len(items)} granule(s) found "
                f"({', '.join(summary.granules[:5])}); widen --datetime or raise --max-cloud"
            )
        t = time.perf_counter()
        _export(cfg, out, tiles, store, fingerprint, items, summary)
        summary.timings_s["export"] = time.perf_counter() - t
    except DataError:
        if fresh:  # nothing usable was produced: leave nothing behind
            for name in ("work.zarr", STRIPS, "mosaic.zarr"):
                out.remove(name)
        raise
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    # the stages overlap: the job's time is search + stream + export, not the sum of the stage spans
    summary.timings_s["total"] = sum(summary.timings_s[k] for k in ("search", "stream", "export"))
    out.write_json(
        "manifest.json",
        {
            "status": "complete",
            "fingerprint": fingerprint,
            "started": started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "config": cfg.to_dict(),
            "grid": grid.to_dict(),
            "aoi_grid": tiles.aoi.to_dict(),
            "layout": {
                "core": layout.core,
                "halo": layout.halo,
                "rows": layout.rows,
                "cols": layout.cols,
                "anchor": cfg.tiling.grid,
                "lattice_origin": layout.origin,
                "valid": layout.valid,
            },
            "inputs": [
                {
                    "id": i["id"],
                    "collection": i.get("collection"),
                    "datetime": i["properties"].get("datetime"),
                    "eo:cloud_cover": i["properties"].get("eo:cloud_cover"),
                }
                for i in items
            ],
            "skipped_granules": summary.skipped_granules,
            "tiles": summary.tiles,
            "tiles_empty": summary.tiles_empty,
            "tiles_resumed": summary.tiles_resumed,
            "timings_s": summary.timings_s,
            "stream": summary.stream,
            "quality": summary.quality,
            "provenance": summary.provenance,
            "versions": versions(),
            "outputs": summary.outputs,
        },
    )
    out.remove(STRIPS)
    if not cfg.output.keep_work:
        out.remove("work.zarr")
    return summary
