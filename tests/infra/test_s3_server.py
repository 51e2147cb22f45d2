"""The loopback S3 endpoint (moto server) works for boto3, s3fs, GDAL /vsis3 (rasterio) and odc-stac."""

from __future__ import annotations

import numpy as np
import pystac
import rasterio
import s3fs

from infra.local.s3_server import S3Server, upload_folder
from infra.local.stac_server import read_catalog
from tests.plugins.services import SAMPLE_CATALOG, first_port_pick_taken

HELDOUT = SAMPLE_CATALOG.parent / "heldout" / "S2A_MSIL2A_20170617T113321_4_55"


def test_upload_and_s3fs_listing(s3_server: S3Server, s3_env: dict[str, str]) -> None:
    keys = upload_folder(HELDOUT, "difffusr-test", "heldout/ie", env=s3_server.env)
    assert len(keys) == 12 and "heldout/ie/B8A.tif" in keys
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server.endpoint_url})
    listed = {p.rsplit("/", 1)[1] for p in fs.ls("difffusr-test/heldout/ie")}
    assert listed == {p.name for p in HELDOUT.glob("*.tif")}
    assert fs.size("difffusr-test/heldout/ie/B02.tif") == (HELDOUT / "B02.tif").stat().st_size
    # s3fs with no explicit endpoint follows AWS_ENDPOINT_URL from the env
    assert s3fs.S3FileSystem().exists("difffusr-test/heldout/ie/B12.tif")


def test_geotiff_read_through_gdal_vsis3(s3_server: S3Server, s3_env: dict[str, str]) -> None:
    upload_folder(HELDOUT, "difffusr-test", "vsis3", env=s3_server.env)
    with rasterio.open(HELDOUT / "B11.tif") as local:
        want, want_tf, want_crs = local.read(1), local.transform, local.crs
    for path in ("/vsis3/difffusr-test/vsis3/B11.tif", "s3://difffusr-test/vsis3/B11.tif"):
        with rasterio.Env(), rasterio.open(path) as src:
            assert src.crs == want_crs and src.transform == want_tf and src.nodata == 0
            np.testing.assert_array_equal(src.read(1), want)


def test_odc_stac_load_from_s3_hrefs(s3_server: S3Server, s3_env: dict[str, str]) -> None:
    import odc.stac

    upload_folder(SAMPLE_CATALOG, "difffusr-cat", "catalog", env=s3_server.env)
    _, items = read_catalog(SAMPLE_CATALOG, href_base="s3://difffusr-cat/catalog")
    item = pystac.Item.from_dict(next(i for i in items if i["id"] == HELDOUT.name))
    assert item.assets["red"].href == f"s3://difffusr-cat/catalog/{HELDOUT.name}/B04.tif"
    ds = odc.stac.load([item], bands=["red"], resolution=10)
    with rasterio.open(HELDOUT / "B04.tif") as local:
        np.testing.assert_array_equal(ds.red.values[0], local.read(1))


def test_zarr_v3_round_trip_on_s3(s3_server: S3Server, s3_env: dict[str, str]) -> None:
    import xarray as xr

    upload_folder(HELDOUT, "difffusr-zarr", "", env=s3_server.env)  # creates the bucket
    with rasterio.open(HELDOUT / "B02.tif") as src:
        b02 = src.read(1)
    ds = xr.Dataset({"B02": (("y", "x"), b02)})
    ds.to_zarr("s3://difffusr-zarr/t.zarr", zarr_format=3, mode="w", consolidated=False)
    back = xr.open_zarr("s3://difffusr-zarr/t.zarr", zarr_format=3, consolidated=False)
    np.testing.assert_array_equal(back.B02.values, b02)


def test_stac_api_with_s3_hrefs(stac_api_s3: str, s3_env: dict[str, str]) -> None:
    import odc.stac
    import pystac_client

    items = list(pystac_client.Client.open(stac_api_s3).search(bbox=[-8.0, 52.0, -6.0, 53.0]).items())
    assert {it.id for it in items} == {HELDOUT.name, "S2A_MSIL2A_20170617T113321_36_85"}
    item = next(it for it in items if it.id == HELDOUT.name)
    assert item.assets["nir09"].href == f"s3://difffusr-samples/catalog/{HELDOUT.name}/B09.tif"
    ds = odc.stac.load([item], bands=["nir09"], resolution=60)
    with rasterio.open(HELDOUT / "B09.tif") as local:
        np.testing.assert_array_equal(ds.nir09.values[0], local.read(1))


def test_port_taken_before_bind_is_replaced(monkeypatch) -> None:
    """A port picked for us but taken before moto binds it costs a retry, not a failed test session."""
    import infra.local.s3_server as s3_server_module

    with (
        first_port_pick_taken(monkeypatch, s3_server_module) as taken,
        S3Server() as server,
        server.patched_env(),
    ):
        assert server.port != taken
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": server.endpoint_url}, skip_instance_cache=True)
        assert fs.ls("") == []
