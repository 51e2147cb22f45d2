"""`difffusr search` and `difffusr run` end to end through the CLI, on the loopback STAC API with the bundled
real Sentinel-2 L2A catalog and a local Ray cluster; outputs read back with xarray/zarr, rasterio and
pystac."""

from __future__ import annotations

import json

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from PIL import Image
from pyproj import Transformer

from pipeline.bands import S2_BANDS
from pipeline.catalog.query import resolve_query
from pipeline.catalog.search import search_items
from pipeline.cli import main
from pipeline.errors import EmptySearchError
from tests.conftest import DEMO_BBOX, DEMO_DATETIME

OUTPUTS = ("mosaic.zarr", "mosaic.tif", "quicklook.png", "item.json", "manifest.json")


def _query(url, **kw):
    args = {
        "stac_url": url,
        "collection": "sentinel-2-l2a",
        "bbox": DEMO_BBOX,
        "datetime_range": DEMO_DATETIME,
    }
    return resolve_query(**{**args, **kw})


def test_search_finds_the_patch_under_the_bbox(stac_api):
    items = search_items(_query(stac_api))
    assert [i["id"] for i in items] == ["S2A_MSIL2A_20170613T101031_87_48"]
    assert items[0]["assets"]["blue"]["href"].startswith("file://")


def test_search_with_cloud_and_mgrs_filters(stac_api):
    assert len(search_items(_query(stac_api, max_cloud=0.0, mgrs_tiles="33UUP"))) == 1
    with pytest.raises(EmptySearchError, match="MGRS 29UPU"):
        search_items(_query(stac_api, mgrs_tiles="29UPU"))


def test_search_outside_the_dates_says_what_to_widen(stac_api):
    with pytest.raises(EmptySearchError, match=r"no 'sentinel-2-l2a' item .* widen --datetime"):
        search_items(_query(stac_api, datetime_range="2019-01-01/2019-01-31"))


def test_search_command_lists_granules_and_tiles(stac_api, capsys):
    assert main(["search", "--stac-url", stac_api, "--bbox", DEMO_BBOX, "--datetime", DEMO_DATETIME]) == 0
    out = capsys.readouterr().out
    assert "S2A_MSIL2A_20170613T101031_87_48" in out and "1 granule(s)" in out and "EPSG:32633" in out


@pytest.fixture(scope="module")
def demo_run(stac_api, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    argv = [
        "run",
        "--stac-url",
        stac_api,
        "--bbox",
        DEMO_BBOX,
        "--datetime",
        DEMO_DATETIME,
        "--method",
        "gs",
        "--out",
        str(out),
        "--quiet",
        "--tile-size",
        "48",
        "--halo",
        "6",
    ]
    assert main(argv) == 0
    return out, argv


def test_run_writes_all_five_outputs(demo_run):
    out, _ = demo_run
    for name in OUTPUTS:
        assert (out / name).exists(), name
    assert not (out / "work.zarr").exists(), "the working store is removed after success"


def test_mosaic_zarr_is_12_bands_on_the_2_5_m_utm_grid_covering_the_aoi(demo_run):
    out, _ = demo_run
    ds = xr.open_zarr(out / "mosaic.zarr")
    refl = ds["reflectance"]
    assert refl.dims == ("band", "y", "x") and refl.sizes["band"] == 12
    assert refl.attrs["band_names"] == list(S2_BANDS)
    assert float(ds.x[1] - ds.x[0]) == pytest.approx(2.5) and float(ds.y[0] - ds.y[1]) == pytest.approx(2.5)
    assert "UTM zone 33N" in ds["spatial_ref"].attrs["crs_wkt"]
    w, s, e, n = (float(v) for v in DEMO_BBOX.split(","))
    xs, ys = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(
        [w, e, w, e], [s, s, n, n]
    )
    assert float(ds.x.min()) - 1.25 <= min(xs) and float(ds.x.max()) + 1.25 >= max(xs)
    assert float(ds.y.min()) - 1.25 <= min(ys) and float(ds.y.max()) + 1.25 >= max(ys)
    values = refl.values
    assert np.isfinite(values).any(axis=0).mean() > 0.5
    # Real reflectance: vegetation is bright in NIR (B08) and dark in red (B04).
    assert np.nanmedian(values[S2_BANDS.index("B08")]) > 2 * np.nanmedian(values[S2_BANDS.index("B04")])


def test_cog_matches_the_zarr_mosaic(demo_run):
    out, _ = demo_run
    ds = xr.open_zarr(out / "mosaic.zarr")
    with rasterio.open(out / "mosaic.tif") as src:
        assert src.count == 12 and src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.descriptions == S2_BANDS and src.scales == (1e-4,) * 12
        assert src.res == (2.5, 2.5) and src.crs.to_epsg() == 32633
        assert (
            src.compression.name.lower() == "zstd" and src.block_shapes[0] == (512, 512) and src.overviews(1)
        )
        assert src.transform.c == pytest.approx(float(ds.x[0]) - 1.25)
        dn = src.read()
    refl = ds["reflectance"].values
    valid = np.isfinite(refl)
    assert ((dn == 0) == ~valid).all(), "nodata in the COG exactly where the mosaic has none"
    # uint16 keeps 0 for nodata, so reflectance <= 0 (a sharpening overshoot) is stored as DN 1.
    np.testing.assert_allclose(dn[valid] * 1e-4, np.clip(refl[valid], 1e-4, None), atol=6e-5)


def test_quicklook_item_and_manifest_describe_the_run(demo_run):
    out, _ = demo_run
    with Image.open(out / "quicklook.png") as im:
        assert im.mode == "RGB" and max(im.size) <= 1024 and np.asarray(im).std() > 5
    item = pystac.Item.from_file(str(out / "item.json"))
    assert item.assets["mosaic"].href.endswith("mosaic.tif")
    assert [link.title for link in item.links if link.rel == "derived_from"] == [
        "S2A_MSIL2A_20170613T101031_87_48"
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config"]["method"] == "gs"
    assert manifest["inputs"][0]["id"] == "S2A_MSIL2A_20170613T101031_87_48"
    assert {"search", "ingest", "inference", "mosaic", "export"} <= set(manifest["timings_s"])
    assert "AWS_SECRET_ACCESS_KEY" not in (out / "manifest.json").read_text()


def test_rerun_of_a_complete_job_does_nothing(demo_run, capsys):
    out, argv = demo_run
    before = (out / "mosaic.tif").stat().st_mtime_ns
    assert main(argv) == 0
    assert "already complete" in capsys.readouterr().out
    assert (out / "mosaic.tif").stat().st_mtime_ns == before


def test_run_with_the_learned_method_gives_the_same_product_layout(stac_api, ray_local, tmp_path):
    out = tmp_path / "difffusr"
    argv = [
        "run",
        "--stac-url",
        stac_api,
        "--bbox",
        DEMO_BBOX,
        "--datetime",
        DEMO_DATETIME,
        "--method",
        "difffusr",
        "--steps",
        "2",
        "--out",
        str(out),
        "--quiet",
        "--tile-size",
        "132",
        "--halo",
        "6",
    ]
    assert main(argv) == 0
    with rasterio.open(out / "mosaic.tif") as src:
        assert src.count == 12 and src.res == (2.5, 2.5) and src.descriptions == S2_BANDS
        dn = src.read()
    valid = dn[S2_BANDS.index("B08")] > 0
    assert valid.mean() > 0.5
    assert np.median(dn[S2_BANDS.index("B08")][valid]) > 2 * np.median(dn[S2_BANDS.index("B04")][valid])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["method"] == "difffusr" and manifest["config"]["model"]["steps"] == 2
