"""How the products store reflectance: the one encoding of `--dtype` shared by the Zarr mosaic and the COG.

"uint16": digital numbers, reflectance / `SCALE` rounded to the nearest integer, 0 = nodata (a reflectance at
or below 0, a sharpening overshoot, is stored as 1), as Sentinel-2 L2A itself stores it. "float32":
reflectance as computed, NaN = nodata. Encoding a decoded block gives back the same numbers exactly, so the
COG written from a uint16 Zarr mosaic equals the one written from the float32 predictions.
"""

from __future__ import annotations

import numpy as np

#: Reflectance of one uint16 digital number.
SCALE = 1e-4


def encode(block: np.ndarray, dtype: str) -> np.ndarray:
    """Reflectance (NaN nodata) -> the stored values of `dtype` ("uint16" or "float32")."""
    if dtype == "float32":
        return block.astype(np.float32)
    dn = np.clip(np.rint(np.nan_to_num(block, nan=0.0) / SCALE), 1, 65535).astype(np.uint16)
    dn[~np.isfinite(block)] = 0
    return dn


def decode(values: np.ndarray) -> np.ndarray:
    """Stored values (uint16 digital numbers or float reflectance) -> float32 reflectance, NaN nodata."""
    if values.dtype == np.uint16:
        out = values.astype(np.float32) * np.float32(SCALE)
        out[values == 0] = np.nan
        return out
    return values.astype(np.float32, copy=False)
