"""The COG built from strips (what `difffusr run` does for a local --out): each strip's COG tiles and its
level-1 half are encoded from the Zarr mosaic, then laid out as a COG; the full resolution equals a direct
encoding of the mosaic and the overviews are the block means of its valid pixels."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr

from pipeline.bands import S2_BANDS
from pipeline.errors import DataError
from pipeline.io.cog import (
    assemble_cog,
    encode,
    gdal_env,
    halve,
    halve_dn,
    overview_levels,
    strip_count,
    write_strip,
)
from pipeline.io.grid import SceneGrid
from pipeline.io.mosaic_store import VARIABLE, create_mosaic_store, write_core
from pipeline.io.scene_files import read_scene
from pipeline.io.tiff_file import read_ifds
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


def _mosaic_store(tmp_path, mosaic: np.ndarray) -> str:
    url = str(tmp_path / "mosaic.zarr")
    root = zarr.open_group(url, mode="w", zarr_format=3)
    root.create_array(VARIABLE, shape=mosaic.shape, chunks=(12, 192, 192), dtype="float32", fill_value=np.nan)
    root[VARIABLE][...] = mosaic
    return url


def test_cog_from_strips_equals_the_mosaic_and_its_block_mean_overviews(tmp_path):
    # 1104 x 1320 output pixels: two strips (1024 + 80 rows), overviews at 1/2 and 1/4 (the second computed
    # by the stitch from the strips' level-1 halves), the real scenes repeated to fill it
    mosaic = np.tile(_real_mosaic(), (1, 3, 2))[:, :1104, :1320]
    layout = TileLayout(height=276, width=330, core=48, halo=6)
    grid = SceneGrid(crs="EPSG:32629", left=500000.0, top=5800000.0, width=330, height=276)
    url = _mosaic_store(tmp_path, mosaic)
    assert overview_levels(*mosaic.shape[1:]) == 2 and strip_count(1104) == 2
    strips = tmp_path / "strips"
    for s in range(2):
        write_strip(url, str(strips), layout, s, dtype="uint16")
    assert sorted(p.name for p in strips.iterdir()) == [
        "strip_00000.tif",
        "strip_00000_ovr1.tif",
        "strip_00001.tif",
        "strip_00001_ovr1.tif",
    ]
    cog = tmp_path / "mosaic.tif"
    assemble_cog(strips, cog, grid, layout, dtype="uint16")
    assert not list(strips.iterdir())  # each strip removed once its tiles were copied
    with rasterio.open(cog) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"  # GDAL recognises the layout
        assert src.descriptions == S2_BANDS and src.scales == (1e-4,) * 12 and src.nodata == 0
        assert src.block_shapes[0] == (512, 512) and src.overviews(1) == [2, 4]
        assert src.res == (2.5, 2.5) and src.transform.c == 500000.0 and src.crs == "EPSG:32629"
        np.testing.assert_array_equal(src.read(), encode(mosaic, "uint16"))
        level1 = src.read(out_shape=(12, 552, 660))
        level2 = src.read(out_shape=(12, 276, 330)).astype(np.int32)
    np.testing.assert_array_equal(level1, encode(halve(mosaic), "uint16"))
    assert (level1[:, :18, :25] == 0).all() and (
        level1[:, 19:240, 26:480] > 0
    ).all()  # nodata only where none valid
    expected2 = encode(halve(halve(mosaic)), "uint16").astype(np.int32)  # from the stored level 1: +-1 DN
    assert np.abs(level2 - expected2).max() <= 1 and (level2 == expected2).mean() > 0.9
    # the COG layout: every IFD before any tile, the overviews' tiles first (smallest first), each tile with
    # its size as a 4-byte leader
    ifds = read_ifds(cog)
    firsts = [min(o for o, _ in ifd.tile_ranges()) for ifd in ifds]
    assert [ifd.tags.get(254) is not None for ifd in ifds] == [False, True, True]
    assert firsts[2] < firsts[1] < firsts[0]
    raw = cog.read_bytes()
    assert b"LAYOUT=IFDS_BEFORE_DATA" in raw[:200]
    for ifd in ifds:
        for offset, size in ifd.tile_ranges():
            assert int.from_bytes(raw[offset - 4 : offset], "little") == size
            assert raw[offset + size : offset + size + 4] == raw[offset + size - 4 : offset + size]


def test_a_stitch_retried_after_removing_strips_encodes_them_again(tmp_path):
    mosaic = _real_mosaic()
    layout = TileLayout(height=120, width=240, core=48, halo=6)
    grid = SceneGrid(crs="EPSG:32629", left=500000.0, top=5800000.0, width=240, height=120)
    url = _mosaic_store(tmp_path, mosaic)
    strips = tmp_path / "strips"
    write_strip(url, str(strips), layout, 0, dtype="uint16")
    assemble_cog(strips, tmp_path / "first.tif", grid, layout, dtype="uint16")
    with pytest.raises(DataError, match="strip .* is missing"):
        assemble_cog(strips, tmp_path / "again.tif", grid, layout, dtype="uint16")
    assemble_cog(strips, tmp_path / "again.tif", grid, layout, dtype="uint16", mosaic_url=url)
    assert (tmp_path / "again.tif").read_bytes() == (tmp_path / "first.tif").read_bytes()
    # a stitch killed between the levels: the half is gone, the full-resolution strip is still there
    write_strip(url, str(strips), layout, 0, dtype="uint16")
    (strips / "strip_00000_ovr1.tif").unlink()
    with pytest.raises(DataError, match="strip_00000_ovr1.tif is missing"):
        assemble_cog(strips, tmp_path / "third.tif", grid, layout, dtype="uint16")
    assemble_cog(strips, tmp_path / "third.tif", grid, layout, dtype="uint16", mosaic_url=url)
    assert (tmp_path / "third.tif").read_bytes() == (tmp_path / "first.tif").read_bytes()


def test_halving_averages_valid_pixels_and_keeps_odd_edges():
    block = np.array([[[1.0, 3.0, 5.0], [np.nan, 2.0, np.nan], [4.0, np.nan, np.nan]]], np.float32)
    out = halve(block)
    assert out.shape == (1, 2, 2)
    np.testing.assert_allclose(out[0, 0], [2.0, 5.0])
    assert out[0, 1, 0] == 4.0 and np.isnan(out[0, 1, 1])


def test_halving_digital_numbers_matches_the_reflectance_path_within_one_dn():
    mosaic = _real_mosaic()[:, :101, :203]  # odd edges and a nodata corner
    dn = encode(mosaic, "uint16")
    got = halve_dn(dn).astype(np.int32)
    want = encode(halve(mosaic), "uint16").astype(np.int32)
    assert got.shape == want.shape == (12, 51, 102)
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.9
    np.testing.assert_array_equal(got == 0, want == 0)  # nodata exactly where no pixel is valid
    assert halve_dn(np.array([[[0, 3], [0, 0]]], np.uint16))[0, 0, 0] == 3  # the valid pixels' mean only


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
    write_strip(url, str(strips), layout, 0, dtype="uint16")
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
