"""Cloud masking and the temporal composite. Pure numpy.

Composite rule: per pixel and band, the median of the valid observations (not nodata, SCL not in
`SCL_INVALID_CLASSES`). Pixels with no valid observation stay NaN. The median is robust to the odd missed
cloud or shadow and needs no ranking of dates.
"""

from __future__ import annotations

import warnings

import numpy as np

from pipeline.bands import SCL_INVALID_CLASSES


def scl_valid_20m(scl: np.ndarray) -> np.ndarray:
    """(…, h, w) SCL classes at 20 m -> bool, True for a usable surface observation."""
    return ~np.isin(scl, SCL_INVALID_CLASSES)


def valid_at_factor(valid_20m: np.ndarray, gsd: int) -> np.ndarray:
    """Carry a 20 m validity mask to the 10 m (repeat) or 60 m (majority of the 3x3 block) grid."""
    if gsd == 20:
        return valid_20m
    if gsd == 10:
        return np.repeat(np.repeat(valid_20m, 2, axis=-2), 2, axis=-1)
    if gsd == 60:
        *lead, h, w = valid_20m.shape
        blocks = valid_20m.reshape(*lead, h // 3, 3, w // 3, 3)
        return blocks.mean(axis=(-3, -1)) >= 0.5
    raise ValueError(f"no mask rule for {gsd} m")


def median_composite(stack: np.ndarray) -> np.ndarray:
    """(T, C, h, w) float32 with NaN for masked observations -> (C, h, w) per-pixel median over time."""
    if stack.shape[0] == 1:
        return stack[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels -> NaN, on purpose
        return np.nanmedian(stack, axis=0).astype(np.float32)
