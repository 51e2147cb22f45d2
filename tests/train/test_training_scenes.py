"""Training reads scene folders through the inference reader; nodata is cut off or refused, never
trained on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from pipeline.bands import S2_BANDS, group_of
from pipeline.errors import TrainingDataError
from pipeline.io.scene_files import read_scene
from pipeline.train.hr_data import discover_sources
from pipeline.train.scenes import drop_nodata_border, read_training_scene
from tests.conftest import CATALOG

AUSTRIA = CATALOG / "S2A_MSIL2A_20170613T101031_87_48"


def _with_nodata(tmp_path: Path, box_m: tuple[int, int, int, int]) -> Path:
    """AUSTRIA with DN 0 in the box (row0, row1, col0, col1), in metres from the top-left, in every band."""
    folder = tmp_path / "scene"
    shutil.copytree(AUSTRIA, folder)
    for band in S2_BANDS:
        with rasterio.open(folder / f"{band}.tif") as src:
            profile, dn = src.profile, src.read(1)
        r0, r1, c0, c1 = (v // group_of(band).gsd_m for v in box_m)
        dn[r0:r1, c0:c1] = 0
        with rasterio.open(folder / f"{band}.tif", "w", **profile) as dst:
            dst.write(dn, 1)
    return folder


def test_training_scene_is_the_inference_scene_as_band_tensors() -> None:
    scene, tensors = read_scene(AUSTRIA), read_training_scene(AUSTRIA)
    assert list(tensors) == [
        "B02",
        "B03",
        "B04",
        "B08",
        "B05",
        "B06",
        "B07",
        "B8A",
        "B11",
        "B12",
        "B01",
        "B09",
    ]
    np.testing.assert_array_equal(tensors["B8A"][0, 0].numpy(), scene.b20[3])
    np.testing.assert_array_equal(tensors["B09"][0, 0].numpy(), scene.b60[1])


def test_a_nodata_edge_is_cut_off_on_the_60m_grid(tmp_path: Path) -> None:
    folder = _with_nodata(tmp_path, (0, 1200, 0, 180))  # the west 180 m (three 60 m columns)
    scene = drop_nodata_border(read_training_scene(folder), str(folder))
    assert scene["B02"].shape == (1, 1, 120, 102) and scene["B01"].shape == (1, 1, 20, 17)
    assert all(torch.isfinite(t).all() for t in scene.values())
    np.testing.assert_array_equal(scene["B05"].numpy(), read_training_scene(AUSTRIA)["B05"][..., 9:].numpy())


def test_nodata_inside_a_training_scene_is_refused(tmp_path: Path) -> None:
    folder = _with_nodata(tmp_path, (600, 660, 600, 660))
    with pytest.raises(TrainingDataError, match="nodata inside its valid area"):
        drop_nodata_border(read_training_scene(folder), str(folder))


def test_an_all_nodata_training_scene_is_refused(tmp_path: Path) -> None:
    folder = _with_nodata(tmp_path, (0, 1200, 0, 1200))
    with pytest.raises(TrainingDataError, match="no 60 m pixel valid in all 12 bands"):
        drop_nodata_border(read_training_scene(folder), str(folder))


def test_sr_training_draws_patches_only_from_valid_pixels(tmp_path: Path) -> None:
    folder = _with_nodata(tmp_path, (0, 1200, 0, 300))  # west 30 columns of the 10 m RGB
    (src,) = [s for s in discover_sources([folder], 64) if s.kind == "s2"]
    assert np.isnan(src.image[:, :, :30]).all() and np.isfinite(src.image[:, :, 30:]).all()
    assert src.valid_corners[:, 1].min() == 30 and len(src.valid_corners) == (120 - 64 + 1) * (90 - 64 + 1)
