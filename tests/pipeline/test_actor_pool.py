"""One inference actor pool serves several jobs (the units of a `--plan`): the model is loaded once, the same
actor processes predict every job's tiles, and each job's output is the one it gets with its own pool."""

from __future__ import annotations

import json

import numpy as np
import rasterio

from pipeline.catalog.query import resolve_query
from pipeline.config import ComputeConfig, OutputConfig, RunConfig, TilingConfig
from pipeline.run import run_job, start_actors, stop_actors
from tests.conftest import DEMO_BBOX, DEMO_DATETIME


def _cfg(stac_api: str, out, bbox: str) -> RunConfig:
    return RunConfig(
        query=resolve_query(
            stac_url=stac_api, collection="sentinel-2-l2a", bbox=bbox, datetime_range=DEMO_DATETIME
        ),
        output=OutputConfig(out=str(out)),
        method="gs",
        tiling=TilingConfig(core=48, halo=12),
        compute=ComputeConfig(workers=1),
    )


def test_one_actor_pool_serves_two_jobs_with_the_same_pixels(stac_api, ray_local, tmp_path):
    w, s, e, n = (float(v) for v in DEMO_BBOX.split(","))
    halves = [f"{w},{s},{(w + e) / 2},{n}", f"{(w + e) / 2},{s},{e},{n}"]
    pool = start_actors(_cfg(stac_api, tmp_path / "x", halves[0]))
    try:
        for i, bbox in enumerate(halves):
            run_job(_cfg(stac_api, tmp_path / f"shared{i}", bbox), progress=False, pool=pool)
    finally:
        stop_actors(pool)
    pids = [
        json.loads((tmp_path / f"shared{i}" / "manifest.json").read_text())["stream"]["actor_pids"]
        for i in (0, 1)
    ]
    assert pids[0] and pids[0] == pids[1]  # the same actor process, model loaded once
    run_job(_cfg(stac_api, tmp_path / "own", halves[1]), progress=False)
    with (
        rasterio.open(tmp_path / "shared1" / "mosaic.tif") as a,
        rasterio.open(tmp_path / "own" / "mosaic.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())
