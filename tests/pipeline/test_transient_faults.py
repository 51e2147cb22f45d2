"""Transient faults of the STAC API and the object store cost retries, not results: `difffusr run` with its
STAC search, its S3 inputs (GDAL /vsis3) and its S3 outputs (s3fs, Zarr) behind proxies that fail 10 % of
the distinct S3 requests once (and most of the few STAC requests), half with 503 and half with a dropped
connection, writes the same outputs, bit for bit, as the same run without faults. Real loopback STAC API,
moto S3 server and local Ray; each run is its own process (and Ray), as a user's would be."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import boto3
import numpy as np
import pytest
import rasterio
import s3fs
import xarray as xr

from infra.local.flaky_proxy import FlakyProxy
from tests.conftest import DEMO_BBOX, DEMO_DATETIME, REPO


def _run(stac_url: str, out: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = ["run", "--stac-url", stac_url, "--bbox", DEMO_BBOX, "--datetime", DEMO_DATETIME,
            "--method", "gs", "--out", out, "--quiet", "--tile-size", "48", "--halo", "6"]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _cog(fs: s3fs.S3FileSystem, path: str) -> np.ndarray:
    with rasterio.MemoryFile(io.BytesIO(fs.cat(path))) as mem, mem.open() as src:
        return src.read()


@pytest.fixture()
def proxies(stac_api_s3, s3_server):
    with (
        # the search is three requests (landing page, conformance, search): 9 in 10 fail once
        FlakyProxy(stac_api_s3, fail_fraction=0.9) as stac,
        FlakyProxy(s3_server.env["AWS_ENDPOINT_URL"], fail_fraction=0.1) as s3,
    ):
        yield stac, s3


def test_a_run_through_transient_faults_writes_what_a_run_without_them_writes(stac_api_s3, s3_env, proxies):
    stac, s3 = proxies
    boto3.client("s3").create_bucket(Bucket="difffusr-faults")
    clean = _run(stac_api_s3, "s3://difffusr-faults/clean", dict(os.environ))
    assert clean.returncode == 0, clean.stderr
    host = s3.url.removeprefix("http://")
    faulty_env = {
        **os.environ,
        "AWS_ENDPOINT_URL": s3.url,
        "AWS_ENDPOINT_URL_S3": s3.url,
        "AWS_S3_ENDPOINT": host,
    }
    faulty = _run(stac.url, "s3://difffusr-faults/faulty", faulty_env)
    assert faulty.returncode == 0, faulty.stderr
    # Faults were injected on both services, of both kinds, and the run got past all of them.
    assert stac.faults["503"] + stac.faults["drop"] >= 1, stac.faults
    assert s3.faults["503"] >= 3 and s3.faults["drop"] >= 3, s3.faults
    fs = s3fs.S3FileSystem()
    np.testing.assert_array_equal(
        _cog(fs, "difffusr-faults/faulty/mosaic.tif"), _cog(fs, "difffusr-faults/clean/mosaic.tif")
    )
    a = xr.open_zarr("s3://difffusr-faults/faulty/mosaic.zarr")["reflectance"].values
    b = xr.open_zarr("s3://difffusr-faults/clean/mosaic.zarr")["reflectance"].values
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).mean() > 0.5
