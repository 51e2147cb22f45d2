"""Shared fixtures of the evaluation tests: the bundled held-out scenes and an SR product made from one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from pipeline.bands import S2_BANDS

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "heldout"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The test machine is shared: keep torch to one thread."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ireland() -> Path:
    return SAMPLES / "S2A_MSIL2A_20170617T113321_4_55"


@pytest.fixture(scope="session")
def finland() -> Path:
    return SAMPLES / "S2B_MSIL2A_20170924T93020_69_24"


@pytest.fixture(scope="session")
def product(tmp_path_factory, finland) -> Path:
    """The Finland held-out scene super-resolved by bicubic interpolation, as a 12-band float32 GeoTIFF at
    2.5 m."""
    from pipeline.inference.scene import super_resolve_scene
    from pipeline.io.scene_files import read_scene

    scene = read_scene(finland)
    sr = super_resolve_scene(*scene.groups, "bicubic")
    gsd, _, left, _, _, top = scene.transform
    path = tmp_path_factory.mktemp("product") / "bicubic.tif"
    profile = {
        "driver": "GTiff",
        "width": sr.shape[2],
        "height": sr.shape[1],
        "count": 12,
        "dtype": "float32",
        "crs": scene.crs,
        "transform": Affine(gsd / 4, 0, left, 0, -gsd / 4, top),
        "nodata": float("nan"),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(sr.astype(np.float32))
        for i, band in enumerate(S2_BANDS, start=1):
            dst.set_band_description(i, band)
    return path
