"""The COG built from strips (what `difffusr run` does for a local --out): every tile row's strip and its
overview levels are written from the Zarr mosaic, then stitched; the full resolution equals a direct encoding
of the mosaic and the overviews are the block means of its valid pixels."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr

from pipeline.bands import S2_BANDS
from pipeline.io.cog import assemble_cog, encode, gdal_env, halve, overview_levels, write_strip
from pipeline.io.grid import SceneGrid
from pipeline.io.mosaic_store import VARIABLE, create_mosaic_store, write_core
from pipeline.io.scene_files import read_scene
from pipeline.tiling.grid import TileLayout
from tests.conftest import HELDOUT


def _real_mosaic() -> np.ndarray:
    """(12, 480, 960) reflectance: the two held-out scenes side by side, each band nearest-upsampled to
    2.5 m, with a nodata corner."""
    halves = []
    for name in ("S2A_MSIL2A_20170617T113321_4_55", "S2B_MSIL2A_20170924T93020_69_24"):
        scene = read_scene(HELDOUT / name)
        bands = []
        for arr, k in zip(scene.groups, (4, 8, 24)):
            bands.extend(np.kron(b, np.ones((k, k), np.float32)) for b in arr)
        order = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]
        halves.append(np.stack([bands[order.index(b)] for b in S2_BANDS])[:, :480, :480])
    mosaic = np.concatenate(halves, axis=2)
    mosaic[:, :37, :51] = np.nan
    return mosaic


def test_cog_from_strips_equals_the_mosaic_and_its_block_mean_overviews(tmp_path):
    mosaic = _real_mosaic()
    layout = TileLayout(height=120, width=240, core=48, halo=6)
    grid = SceneGrid(crs="EPSG:32629", left=500000.0, top=5800000.0, width=240, height=120)
    url = str(tmp_path / "mosaic.zarr")
    root = zarr.open_group(url, mode="w", zarr_format=3)
    root.create_array(VARIABLE, shape=mosaic.shape, chunks=(12, 192, 192), dtype="float32", fill_value=np.nan)
    root[VARIABLE][...] = mosaic
    assert overview_levels(*mosaic.shape[1:], layout) == 1
    strips = tmp_path / "strips"
    for row in range(layout.rows):
        write_strip(url, str(strips), layout, row, dtype="uint16")
    assert len(list(strips.glob("strip_*_ovr1.tif"))) == layout.rows
    cog = tmp_path / "mosaic.tif"
    assemble_cog(strips, cog, grid, layout, dtype="uint16")
    with rasterio.open(cog) as src:
        assert src.descriptions == S2_BANDS and src.scales == (1e-4,) * 12 and src.nodata == 0
        assert src.block_shapes[0] == (512, 512) and src.overviews(1) == [2]
        assert src.res == (2.5, 2.5) and src.transform.c == 500000.0
        np.testing.assert_array_equal(src.read(), encode(mosaic, "uint16"))
        level1 = src.read(out_shape=(12, 240, 480))
    np.testing.assert_array_equal(level1, encode(halve(mosaic), "uint16"))
    assert (level1[:, :18, :25] == 0).all() and (
        level1[:, 19:, 26:] > 0
    ).all()  # nodata only where none valid


def test_halving_averages_valid_pixels_and_keeps_odd_edges():
    block = np.array([[[1.0, 3.0, 5.0], [np.nan, 2.0, np.nan], [4.0, np.nan, np.nan]]], np.float32)
    out = halve(block)
    assert out.shape == (1, 2, 2)
    np.testing.assert_allclose(out[0, 0], [2.0, 5.0])
    assert out[0, 1, 0] == 4.0 and np.isnan(out[0, 1, 1])


def test_uint16_zarr_mosaic_decodes_to_reflectance_and_gives_the_same_cog(tmp_path):
    """`--dtype uint16` (the default) stores the Zarr mosaic as digital numbers: xarray decodes them to the
    reflectance the COG holds (NaN nodata), and the COG built from it equals the one of the float32 values."""
    mosaic = _real_mosaic()
    mosaic[0, 100, 100] = -0.01  # a sharpening overshoot: stored as DN 1, as in the COG
    layout = TileLayout(height=120, width=240, core=48, halo=6)
    grid = SceneGrid(crs="EPSG:32629", left=500000.0, top=5800000.0, width=240, height=120)
    url = str(tmp_path / "mosaic.zarr")
    create_mosaic_store(url, grid, layout, attrs={}, dtype="uint16")
    for key in layout.tile_keys():
        y0, y1, x0, x1 = (4 * v for v in layout.core_bounds(key))
        write_core(url, layout, key, mosaic[:, y0:y1, x0:x1])
    raw = zarr.open_array(url, path=VARIABLE, mode="r", zarr_format=3)
    assert raw.dtype == np.uint16 and raw.fill_value == 0
    np.testing.assert_array_equal(raw[...], encode(mosaic, "uint16"))
    decoded = xr.open_zarr(url, consolidated=False)[VARIABLE].values
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(mosaic))
    valid = np.isfinite(mosaic)
    np.testing.assert_allclose(decoded[valid], np.clip(mosaic[valid], 1e-4, None), atol=5.1e-5)
    strips = tmp_path / "strips"
    for row in range(layout.rows):
        write_strip(url, str(strips), layout, row, dtype="uint16")
    cog = tmp_path / "mosaic.tif"
    assemble_cog(strips, cog, grid, layout, dtype="uint16")
    with rasterio.open(cog) as src:
        np.testing.assert_array_equal(src.read(), encode(mosaic, "uint16"))


def _gdal_library() -> ctypes.CDLL:
    """The libgdal rasterio runs on (its wheel bundles one next to the package)."""
    found = sorted((Path(rasterio.__file__).parent.parent / "rasterio.libs").glob("libgdal*.so*"))
    if not found:
        pytest.skip("rasterio is not the wheel build with its own libgdal")
    lib = ctypes.CDLL(str(found[0]))
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    return lib


def test_gdal_env_sets_the_block_cache_in_megabytes():
    """The strip and stitch tasks bound their memory with a GDAL block cache in MB; rasterio passes an integer
    GDAL_CACHEMAX on as bytes (a 16-byte cache was what `rasterio.Env(GDAL_CACHEMAX=16)` gave them)."""
    lib = _gdal_library()
    outside = lib.GDALGetCacheMax64()
    with gdal_env(cache_mb=16, GDAL_MAX_DATASET_POOL_SIZE=8):
        assert lib.GDALGetCacheMax64() == 16 * 2**20
        assert rasterio.env.getenv()["GDAL_MAX_DATASET_POOL_SIZE"] == 8
    assert lib.GDALGetCacheMax64() == outside
