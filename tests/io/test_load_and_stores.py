"""odc-stac ingest of real COGs (values, SCL masking) and the Zarr work store round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from pipeline.errors import OutputError
from pipeline.ingest.load import load_tile
from pipeline.io.grid import SceneGrid, resolve_grid
from pipeline.io.work_store import DONE, WorkStore
from pipeline.tiling.grid import TileKey, TileLayout
from tests.conftest import CATALOG, SAMPLES

PATCH = "S2A_MSIL2A_20170613T101031_87_48"
SAHARA = SAMPLES / "scenes" / "western_sahara_29rkh_100m_crop"


def _absolute(item_path):
    item = json.loads(item_path.read_text())
    for asset in item["assets"].values():
        if asset["href"].startswith("./"):
            asset["href"] = (item_path.parent / asset["href"][2:]).resolve().as_uri()
    return item


def test_ingested_tile_equals_the_cog_pixels_scaled_to_reflectance():
    item = _absolute(CATALOG / PATCH / f"{PATCH}.json")
    # The patch's own grid: UL (404400, 5342400), 120 x 120 px at 10 m; one tile, no halo.
    grid = SceneGrid(crs="EPSG:32633", left=404400.0, top=5342400.0, height=120, width=120)
    layout = TileLayout(height=120, width=120, core=120, halo=0)
    data = load_tile([item], grid, layout, TileKey(row=0, col=0))
    for group_arr, band, index in ((data.b10, "B04", 2), (data.b20, "B11", 4), (data.b60, "B09", 1)):
        with rasterio.open(CATALOG / PATCH / f"{band}.tif") as src:
            expected = src.read(1) * 1e-4
        np.testing.assert_allclose(group_arr[index], expected, rtol=1e-6)
    assert data.observations == {PATCH: 120 * 120}


def test_scl_clouds_become_nodata_in_every_group():
    item = _absolute(SAHARA / "item_local.json")
    with rasterio.open(SAHARA / "SCL.tif") as src:
        scl = src.read(1)
        left, top = src.transform.c, src.transform.f
    # A 1.2 km window 2.4 km east of the crop's corner: 6 x 6 SCL pixels of 200 m, partly cirrus (class 10).
    grid = SceneGrid(crs="EPSG:32629", left=left + 2400.0, top=top, height=120, width=120)
    layout = TileLayout(height=120, width=120, core=120, halo=0)
    data = load_tile([item], grid, layout, TileKey(row=0, col=0))
    cloudy = np.isin(scl[:6, 12:18], (8, 9, 10))
    assert 0 < cloudy.mean() < 1, "the window must hold both clouds and clear sky"
    np.testing.assert_array_equal(np.isnan(data.b20[0]), np.repeat(np.repeat(cloudy, 10, 0), 10, 1))
    np.testing.assert_array_equal(np.isnan(data.b10[0]), np.repeat(np.repeat(cloudy, 20, 0), 20, 1))


def test_work_store_round_trip_and_refusal_of_another_job(tmp_path):
    layout = TileLayout(height=48, width=36, core=24, halo=6)
    store = WorkStore(str(tmp_path / "work.zarr"))
    store.create(layout, "job-a")
    key = TileKey(row=1, col=1)
    rng = np.random.default_rng(0)
    b10, b20, b60 = (rng.random((c, 36 // k, 36 // k), dtype=np.float32) for c, k in ((4, 1), (6, 2), (2, 6)))
    b10[0, 0, 0] = np.nan
    store.write_tile(key, b10, b20, b60)
    store.mark("ingest", key, DONE)
    r10, _, r60 = store.read_tiles([key])
    np.testing.assert_array_equal(r10[0], b10)
    np.testing.assert_array_equal(r60[0], b60)
    assert store.status("ingest").tolist() == [[0, 0], [0, 1]]
    store.create(layout, "job-a")  # same job: reopened, markers kept
    assert store.status("ingest")[1, 1] == DONE
    with pytest.raises(OutputError, match="different job"):
        store.create(layout, "job-b")


def test_grid_is_snapped_to_60_m_in_the_aois_utm_zone():
    grid = resolve_grid((13.7127, 48.2168, 13.7292, 48.2278))
    assert grid.crs == "EPSG:32633"
    assert grid.left % 60 == 0 and grid.top % 60 == 0 and grid.height % 6 == 0 and grid.width % 6 == 0
    south = resolve_grid((-70.01, -33.5, -70.0, -33.49))
    assert south.crs == "EPSG:32719"
