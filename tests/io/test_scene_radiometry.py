"""Training and inference read a scene folder to the same reflectance, by the STAC path's rule.

The scene: the bundled held-out patch rewritten as a processing-baseline-04.00 product (DN + 1000, the file
declaring scale 1e-4 / offset -0.1) with a 120 m nodata border (DN 0) in every band.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.bands import BAND_GROUPS, S2_BANDS, group_of
from pipeline.catalog.radiometry import resolve_radiometry, to_reflectance
from pipeline.io.scene_files import file_radiometry, read_bands, read_scene
from pipeline.train.fusion import FusionTrainConfig, load_training_scenes
from pipeline.train.scenes import read_training_scene
from tests.conftest import HELDOUT

SOURCE = HELDOUT / "S2A_MSIL2A_20170617T113321_4_55"
BORDER_M = 120  # two 60 m pixels on every side


def _rewrite_as_baseline_04(dst_dir: Path, *, tags: bool) -> Path:
    """The SOURCE scene as a baseline-04.00 product: DN + 1000, DN 0 on a BORDER_M border."""
    dst_dir.mkdir()
    for band in S2_BANDS:
        with rasterio.open(SOURCE / f"{band}.tif") as src:
            profile, dn = src.profile, src.read(1)
        assert dn.min() > 0 and dn.max() < 65535 - 1000
        dn = dn + np.uint16(1000)
        b = BORDER_M // group_of(band).gsd_m
        dn[:b, :], dn[-b:, :], dn[:, :b], dn[:, -b:] = 0, 0, 0, 0
        with rasterio.open(dst_dir / f"{band}.tif", "w", **{**profile, "nodata": 0}) as dst:
            dst.write(dn, 1)
            if tags:
                dst.scales, dst.offsets = (1e-4,), (-0.1,)
    return dst_dir


@pytest.fixture(scope="module")
def baseline04(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _rewrite_as_baseline_04(tmp_path_factory.mktemp("b04") / "scene", tags=True)


def _border_mask(band: str, shape: tuple[int, int]) -> np.ndarray:
    b = BORDER_M // group_of(band).gsd_m
    mask = np.ones(shape, dtype=bool)
    mask[b:-b, b:-b] = False
    return mask


def test_training_and_inference_read_the_same_reflectance_with_nan_at_nodata(baseline04: Path) -> None:
    original = read_scene(SOURCE)
    inference = read_scene(baseline04)  # what `difffusr superres` reads
    training = read_training_scene(baseline04)  # what `difffusr train fusion` reads
    for group, inf, orig in zip(BAND_GROUPS, inference.groups, original.groups, strict=True):
        for i, band in enumerate(group.bands):
            train = training[band][0, 0].numpy()
            assert train.dtype == inf.dtype == np.float32
            np.testing.assert_array_equal(train, inf[i])  # NaN == NaN here
            border = _border_mask(band, inf[i].shape)
            assert np.isnan(inf[i][border]).all() and np.isfinite(inf[i][~border]).all(), band
            # (DN + 1000) * 1e-4 - 0.1 is exactly the original DN / 10000 (float64, one float32 rounding)
            np.testing.assert_array_equal(inf[i][~border], orig[i][~border])


def test_the_fusion_trainer_cuts_the_nodata_border_and_keeps_the_reflectance(baseline04: Path) -> None:
    scenes = load_training_scenes(FusionTrainConfig(data=(str(baseline04),)))
    (scene,) = scenes.values()
    original = read_training_scene(SOURCE)
    for band, t in scene.items():
        b = BORDER_M // group_of(band).gsd_m
        np.testing.assert_array_equal(t.numpy(), original[band][..., b:-b, b:-b].numpy())


def test_sr_training_and_eval_read_the_rgb_the_same_way(baseline04: Path) -> None:
    rgb = read_bands(baseline04, ("B04", "B03", "B02"))
    scene = read_scene(baseline04)
    np.testing.assert_array_equal(rgb, scene.b10[[2, 1, 0]])


def test_the_stac_path_resolves_the_same_radiometry_for_the_file(baseline04: Path) -> None:
    item = {
        "id": "S2A_MSIL2A_20240617T113321_R080_T29UNU",
        "properties": {"s2:processing_baseline": "04.00"},
        "assets": {"red": {"href": str(baseline04 / "B04.tif"), "type": "image/tiff; application=geotiff"}},
    }
    stac = resolve_radiometry(item, "red")
    with rasterio.open(baseline04 / "B04.tif") as src:
        dn = src.read(1)
        from_file = file_radiometry(src)
    assert (stac.scale, stac.offset, stac.nodata) == (from_file.scale, from_file.offset, from_file.nodata)
    assert (stac.scale, stac.offset, stac.nodata) == (1e-4, -0.1, 0)
    np.testing.assert_array_equal(to_reflectance(dn, stac), to_reflectance(dn, from_file))
    np.testing.assert_array_equal(to_reflectance(dn, stac), read_scene(baseline04).b10[2])


def test_an_untagged_baseline_04_product_gets_the_offset_from_its_product_name(tmp_path: Path) -> None:
    """No scale/offset tags: the folder's SAFE-style name (`_N0400_`) selects the BOA offset, as for STAC."""
    folder = _rewrite_as_baseline_04(
        tmp_path / "S2A_MSIL2A_20240617T113321_N0400_R080_T29UNU_20240617T150505", tags=False
    )
    with rasterio.open(folder / "B04.tif") as src:
        r = file_radiometry(src, baseline=4.0)
    assert (r.scale, r.offset, r.source) == (1e-4, -0.1, "baseline>=04.00")
    original = read_scene(SOURCE).b10
    got = read_scene(folder).b10
    inner = ~_border_mask("B02", got.shape[-2:])
    np.testing.assert_array_equal(got[:, inner], original[:, inner])
    # The same untagged files under a name that tells no baseline are read by the pre-04.00 rule.
    plain = shutil.copytree(folder, tmp_path / "plain")
    np.testing.assert_allclose(read_scene(plain).b10[:, inner], original[:, inner] + 0.1, atol=1e-6)
