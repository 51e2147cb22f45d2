"""A quicklook PNG of the mosaic's true colour (B04, B03, B02) with a 2-98 % stretch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.bands import RGB_BANDS, S2_BANDS


def rgb_quicklook(rgb: np.ndarray) -> Image.Image:
    """(3, h, w) reflectance (NaN nodata) -> RGB image; nodata is black."""
    valid = np.isfinite(rgb).all(axis=0)
    out = np.zeros(rgb.shape[1:] + (3,), np.uint8)
    if valid.any():
        lo, hi = np.percentile(rgb[:, valid], [2, 98])
        scaled = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
        out[valid] = (np.moveaxis(scaled, 0, -1)[valid] * 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def write_quicklook(read_band, height: int, width: int, dest: str | Path, max_side: int = 1024) -> None:
    """Decimate to at most `max_side` pixels and save a PNG.

    Args:
        read_band: callable (band index in S2 order, step) -> (h', w') decimated reflectance.
    """
    step = max(1, int(np.ceil(max(height, width) / max_side)))
    rgb = np.stack([read_band(S2_BANDS.index(b), step) for b in RGB_BANDS])
    rgb_quicklook(rgb).save(dest, format="PNG")
