"""Two `difffusr run --grid zone` jobs over overlapping areas of the bundled demo patch (the learned method,
its diffusion noise seeded per tile) write the same pixels where they overlap, bit for bit: the zone lattice
gives them the same tiles, windows, seeds and blends there. Real loopback STAC API and local Ray."""

from __future__ import annotations

import numpy as np
import rasterio

from pipeline.cli import main
from tests.conftest import DEMO_BBOX, DEMO_DATETIME
from tests.plugins.rasters import read_overlap


def _run(stac_api: str, bbox: tuple[float, ...], out) -> None:
    argv = ["run", "--stac-url", stac_api, "--bbox", ",".join(f"{v:.6f}" for v in bbox),
            "--datetime", DEMO_DATETIME, "--method", "difffusr", "--steps", "2", "--grid", "zone",
            "--tile-size", "24", "--halo", "6", "--dtype", "float32", "--out", str(out),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0


def test_overlapping_zone_jobs_are_bit_identical_where_they_overlap(stac_api, ray_local, tmp_path):
    w, s, e, n = (float(v) for v in DEMO_BBOX.split(","))
    dw, dh = e - w, n - s
    west = (w, s, w + 0.65 * dw, s + 0.65 * dh)  # two AOIs that share ~0.3 x 0.3 of the patch
    east = (w + 0.35 * dw, s + 0.35 * dh, e, n)
    _run(stac_api, west, tmp_path / "west")
    _run(stac_api, east, tmp_path / "east")
    a, b = read_overlap(tmp_path / "west" / "mosaic.tif", tmp_path / "east" / "mosaic.tif")
    both = np.isfinite(a) & np.isfinite(b)
    assert both.sum() > 12 * 100 * 100  # the AOIs overlap: ~400 m = 160 output pixels a side
    np.testing.assert_array_equal(a[both], b[both])
    # Each job's data stop at its own AOI: outside it, its lattice tiles hold nodata.
    with rasterio.open(tmp_path / "west" / "mosaic.tif") as src:
        data = src.read(1)
    assert np.isnan(data).any() and np.isfinite(data).mean() > 0.3
    # (tests/tiling/test_zone_grid.py has the control: AOI-anchored jobs do not agree there)
