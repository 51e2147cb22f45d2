"""`difffusr superres` on bundled real scenes: native 10/20/60 m, Wald-degraded 40/80/240 m, and nodata."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling

from pipeline.bands import S2_BANDS, group_of
from pipeline.cli import main
from tests.conftest import HELDOUT

SCENE = HELDOUT / "S2A_MSIL2A_20170617T113321_4_55"


def test_superres_native_scene_gives_12_bands_at_2_5_m(tmp_path, capsys):
    out = tmp_path / "sr.tif"
    assert main(["superres", str(SCENE), str(out), "--method", "bicubic"]) == 0
    assert "12 x 480 x 480 px at 2.5 m" in capsys.readouterr().out
    with rasterio.open(SCENE / "B02.tif") as ref, rasterio.open(out) as src:
        assert src.count == 12 and src.descriptions == S2_BANDS and src.res == (2.5, 2.5)
        assert src.crs == ref.crs and src.bounds == pytest.approx(ref.bounds)
        sr = src.read().astype(np.float64)
        # Each band's 4x4 block mean stays close to its native value (bicubic is near-consistent).
        b02 = ref.read(1).astype(np.float64)
    blocks = sr[S2_BANDS.index("B02")].reshape(120, 4, 120, 4).mean(axis=(1, 3))
    assert np.abs(blocks - b02).mean() < 0.03 * b02.mean()


def test_superres_accepts_wald_degraded_40_80_240_m_inputs(tmp_path):
    degraded = tmp_path / "wald"
    degraded.mkdir()
    for band in S2_BANDS:
        with rasterio.open(SCENE / f"{band}.tif") as src:
            f = 4
            data = src.read(1, out_shape=(src.height // f, src.width // f), resampling=Resampling.average)
            profile = {
                **src.profile,
                "height": data.shape[0],
                "width": data.shape[1],
                "transform": src.transform @ src.transform.scale(f, f),
            }
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(degraded / f"{band}.tif", "w", **{**profile, "tiled": False}) as dst:
            dst.write(data, 1)
    out = tmp_path / "sr.tif"
    assert main(["superres", str(degraded), str(out), "--method", "gs"]) == 0
    with rasterio.open(out) as src:
        assert src.res == (10.0, 10.0) and (src.height, src.width) == (120, 120) and src.count == 12


def test_nodata_in_the_input_stays_nodata_in_every_band(tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(SCENE, scene)
    # A swath-edge-like nodata region: the west 300 m (DN 0) in every band at its own resolution.
    for band in S2_BANDS:
        path = scene / f"{band}.tif"
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read(1)
        data[:, : 300 // (group_of(band).gsd_m)] = 0
        with rasterio.open(path, "w", **{**profile, "driver": "GTiff", "nodata": 0}) as dst:
            dst.write(data, 1)
    out = tmp_path / "sr.tif"
    assert main(["superres", str(scene), str(out), "--method", "gs"]) == 0
    with rasterio.open(out) as src:
        sr = src.read()
    assert (sr[:, :, : 300 * 4 // 10] == 0).all(), "nodata columns must stay nodata"
    # 60 m bands: 300 m = 5 pixels exactly; outside the nodata strip the output has data.
    assert (sr[:, :, 300 * 4 // 10 :] > 0).all()


def test_missing_band_file_is_a_one_line_error(tmp_path, capsys):
    scene = tmp_path / "scene"
    shutil.copytree(SCENE, scene)
    (scene / "B8A.tif").unlink()
    assert main(["superres", str(scene), str(tmp_path / "sr.tif")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no GeoTIFF for band B8A" in err[0]


def test_superres_with_the_learned_method_keeps_bands_grid_and_nodata(tmp_path):
    """The full DiffFuSR path with the shipped weights (few DDIM steps to keep the test short)."""
    scene = tmp_path / "scene"
    shutil.copytree(SCENE, scene)
    for band in S2_BANDS:  # nodata in the west 300 m of every band, as at a swath edge
        path = scene / f"{band}.tif"
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read(1)
        data[:, : 300 // group_of(band).gsd_m] = 0
        with rasterio.open(path, "w", **{**profile, "driver": "GTiff", "nodata": 0}) as dst:
            dst.write(data, 1)
    out = tmp_path / "sr.tif"
    assert main(["superres", str(scene), str(out), "--method", "difffusr", "--steps", "4"]) == 0
    with rasterio.open(out) as src, rasterio.open(SCENE / "B02.tif") as ref:
        assert src.count == 12 and src.descriptions == S2_BANDS and src.res == (2.5, 2.5)
        assert src.bounds == pytest.approx(ref.bounds)
        sr = src.read()
    assert (sr[:, :, :120] == 0).all() and (sr[:, :, 120:] > 0).all()
    # Real reflectance survives the learned path: pasture is bright in NIR and dark in red.
    assert np.median(sr[S2_BANDS.index("B08"), :, 120:]) > 2 * np.median(sr[S2_BANDS.index("B04"), :, 120:])
