"""Reading what two runs wrote over the same ground, for the tests that compare them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import from_bounds


def read_overlap(a_path: Path, b_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The two GeoTIFFs' pixels over the intersection of their extents (same CRS and resolution)."""
    with rasterio.open(a_path) as a, rasterio.open(b_path) as b:
        assert a.crs == b.crs and a.res == b.res
        left, bottom = max(a.bounds.left, b.bounds.left), max(a.bounds.bottom, b.bounds.bottom)
        right, top = min(a.bounds.right, b.bounds.right), min(a.bounds.top, b.bounds.top)
        wa = from_bounds(left, bottom, right, top, a.transform).round_offsets().round_lengths()
        wb = from_bounds(left, bottom, right, top, b.transform).round_offsets().round_lengths()
        return a.read(window=wa), b.read(window=wb)
