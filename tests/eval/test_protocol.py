"""Scene reading, the Wald protocol and the consistency check on the bundled held-out scenes."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from pipeline.bands import S2_BANDS
from pipeline.errors import AssetError, ConfigError, DataError
from pipeline.eval.protocol import WaldConfig, consistency_check, crop_for_ratio, wald_scene
from pipeline.io.scene_files import match_product_to_scene, read_product, read_scene

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "heldout"
IRELAND = SAMPLES / "S2A_MSIL2A_20170617T113321_4_55"
FINLAND = SAMPLES / "S2B_MSIL2A_20170924T93020_69_24"


def test_read_scene_gives_reflectance_groups_nested_1_2_6():
    s = read_scene(IRELAND)
    assert s.b10.shape == (4, 120, 120) and s.b20.shape == (6, 60, 60) and s.b60.shape == (2, 20, 20)
    assert s.b10.dtype == np.float32
    assert 0.0 < np.nanmean(s.b10[0]) < 0.2  # B02 reflectance, not DN
    assert s.transform[0] == 10.0


def test_read_scene_snaps_shifted_grids_onto_the_60m_grid(tmp_path):
    # rewrite the real B02 without its first column: the 10 m grid now starts 10 m east of the others
    for f in IRELAND.glob("*.tif"):
        shutil.copy(f, tmp_path / f.name)
    with rasterio.open(IRELAND / "B02.tif") as src:
        profile = src.profile
        data = src.read(1, window=Window(1, 0, 119, 120))
        profile.update(width=119, transform=src.window_transform(Window(1, 0, 119, 120)))
    with rasterio.open(tmp_path / "B02.tif", "w", **profile) as dst:
        dst.write(data, 1)
    s = read_scene(tmp_path)
    assert s.b10.shape == (4, 120, 114) and s.b20.shape == (6, 60, 57) and s.b60.shape == (2, 20, 19)
    ref = read_scene(IRELAND)
    np.testing.assert_array_equal(s.b10, ref.b10[:, :, 6:])
    np.testing.assert_array_equal(s.b60, ref.b60[:, :, 1:])


def test_nodata_value_becomes_nan(tmp_path):
    for f in IRELAND.glob("*.tif"):
        shutil.copy(f, tmp_path / f.name)
    with rasterio.open(IRELAND / "B05.tif") as src:
        profile, block = src.profile, src.read(1)
    block[:10, :10] = 0  # the file's nodata value
    with rasterio.open(tmp_path / "B05.tif", "w", **profile) as dst:
        dst.write(block, 1)
    s = read_scene(tmp_path)
    assert np.isnan(s.b20[0, :10, :10]).all() and np.isfinite(s.b20[0, 10:, 10:]).all()


def test_missing_band_is_a_user_error(tmp_path):
    for f in IRELAND.glob("*.tif"):
        if f.name != "B8A.tif":
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(AssetError, match="B8A"):
        read_scene(tmp_path)


def test_unsupported_ratio_is_rejected():
    with pytest.raises(ConfigError, match="--ratio 3"):
        WaldConfig(ratio=3)


def test_crop_keeps_the_grids_nested():
    s = crop_for_ratio(read_scene(IRELAND), 4, crop=50)
    assert s.b10.shape == (4, 48, 48) and s.b20.shape == (6, 24, 24) and s.b60.shape == (2, 8, 8)


def _oracle(scene):
    """A 'method' that returns the native 10 m bands (20/60 m by pixel repetition).

    On the 4x grid of the LR input.
    """

    def superresolve(b10, b20, b60, method, *, seed=0):
        rep = {"10m": 1, "20m": 2, "60m": 6}
        out = {}
        for name, arr, group_bands in (
            ("10m", scene.b10, ("B02", "B03", "B04", "B08")),
            ("20m", scene.b20, ("B05", "B06", "B07", "B8A", "B11", "B12")),
            ("60m", scene.b60, ("B01", "B09")),
        ):
            k = rep[name]
            up = np.repeat(np.repeat(arr, k, axis=1), k, axis=2)
            out.update({b: up[i] for i, b in enumerate(group_bands)})
        return np.stack([out[b] for b in S2_BANDS])

    return superresolve


def test_wald_scores_the_reference_itself_as_perfect_at_10m():
    scene = read_scene(FINLAND)
    res = wald_scene(scene, ["oracle"], WaldConfig(), superresolve=_oracle(scene))
    g = res.methods["oracle"].groups
    assert g["10m"]["psnr"] == math.inf and g["10m"]["rmse"] == 0.0 and g["10m"]["ergas"] == 0.0
    assert g["10m"]["ssim"] == pytest.approx(1.0)
    assert res.lr["10m"].shape == (4, 30, 30) and res.lr["60m"].shape == (2, 5, 5)


def test_wald_baselines_on_a_heldout_scene():
    res = wald_scene(read_scene(IRELAND), ["bicubic", "gs"], WaldConfig())
    for mr in res.methods.values():
        assert set(mr.bands) == set(S2_BANDS)
        for g in ("10m", "20m", "60m", "all"):
            assert 25.0 < mr.groups[g]["psnr"] < 60.0
        for g in ("10m", "20m", "60m"):
            os_ = mr.opensr[g]
            assert os_["improvement"] + os_["omission"] + os_["hallucination"] == pytest.approx(1.0)
    # the RGB-guided baseline sharpens the 20 m bands beyond plain interpolation on this real scene
    assert res.methods["gs"].groups["20m"]["psnr"] > res.methods["bicubic"].groups["20m"]["psnr"]


def test_wald_with_nodata_scores_only_valid_pixels():
    scene = read_scene(FINLAND)
    b10 = scene.b10.copy()
    b10[:, :24, :24] = np.nan
    import dataclasses

    scene = dataclasses.replace(scene, b10=b10)
    res = wald_scene(scene, ["bicubic"], WaldConfig())
    for v in res.methods["bicubic"].groups["10m"].values():
        assert math.isfinite(v)


def test_consistency_of_a_superres_product_with_its_inputs(product):
    sr, scene = match_product_to_scene(read_product(product), read_scene(FINLAND))
    assert sr.shape == (12, 480, 480)
    res = consistency_check(sr, scene, product="bicubic.tif")
    for g in ("10m", "20m", "60m"):
        assert res.groups[g]["r2"] > 0.9  # interpolation keeps the low frequencies of its inputs
        assert res.groups[g]["reflectance_l1"] < 0.01


def test_consistency_rejects_a_product_of_other_inputs(product):
    with pytest.raises(DataError, match="CRS|overlap|grid"):
        match_product_to_scene(read_product(product), read_scene(IRELAND))
