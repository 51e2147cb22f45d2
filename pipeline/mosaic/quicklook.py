"""A quicklook PNG of the mosaic's true colour (B04, B03, B02) with a 2-98 % stretch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def rgb_quicklook(rgb: np.ndarray) -> Image.Image:
    """(3, h, w) reflectance (NaN nodata) -> RGB image; nodata is black."""
    valid = np.isfinite(rgb).all(axis=0)
    out = np.zeros(rgb.shape[1:] + (3,), np.uint8)
    if valid.any():
        lo, hi = np.percentile(rgb[:, valid], [2, 98])
        scaled = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
        out[valid] = (np.moveaxis(scaled, 0, -1)[valid] * 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def write_quicklook(rgb: np.ndarray, dest: str | Path) -> None:
    """Save a (3, h, w) true-colour reflectance overview (B04, B03, B02; NaN nodata) as a PNG.

    The overview is written core by core while the mosaic is assembled (`WorkStore.write_overview`), so the
    quicklook never reads the full-resolution store.
    """
    rgb_quicklook(rgb).save(dest, format="PNG")
