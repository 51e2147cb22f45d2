"""NaN-aware resampling of numpy reflectance stacks for evaluation.

Every degrade-back in the evaluation goes through the project's sensor model
(`pipeline.models.sensor.wald_degrade`: Gaussian MTF blur + boxcar), so that the protocol that makes the
low-resolution input and the check that degrades the output back use the same operator. The sensor model
expects NaN-free tensors; here nodata is handled by normalised convolution (the blur of the valid-pixel
weights divides the blur of the zero-filled data) and a coarse pixel is kept only when every fine pixel
under its boxcar is valid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.models.sensor import upsample as _upsample
from pipeline.models.sensor import wald_degrade


def degrade(x: np.ndarray, factor: int, *, sigma: float | None = None) -> np.ndarray:
    """Degrade a (C, H, W) stack by an integer factor with the sensor model, NaN-aware.

    Args:
        x: (C, H, W) float reflectance; NaN = nodata.
        factor: integer factor >= 1; H and W need not be multiples (trailing pixels are dropped).
        sigma: Gaussian sigma in fine pixels; None = the sensor model's default for `factor`.

    Returns:
        (C, H // factor, W // factor) float32; NaN where any fine pixel under the boxcar was nodata.
    """
    if x.ndim != 3:
        raise ValueError(f"degrade expects (C, H, W), got shape {x.shape}")
    if factor == 1:
        return np.asarray(x, dtype=np.float32).copy()
    valid = np.isfinite(x)
    t = torch.from_numpy(np.where(valid, x, 0.0).astype(np.float32))[None]
    if valid.all():
        return wald_degrade(t, factor, sigma=sigma)[0].numpy()
    w = torch.from_numpy(valid.astype(np.float32))[None]
    num = wald_degrade(t, factor, sigma=sigma)[0]
    den = wald_degrade(w, factor, sigma=sigma)[0]
    full = F.avg_pool2d(w, kernel_size=factor, stride=factor)[0] >= 1.0 - 1e-6
    out = torch.where(full & (den > 0), num / den.clamp_min(1e-12), torch.full_like(num, float("nan")))
    return out.numpy()


def upsample_bilinear(x: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear (pixel-centre aligned) upsampling of a (C, H, W) stack; NaN spreads to its neighbours.

    This is the zero-parameter "LR in the HR space" of OpenSR-test (torch bilinear interpolation).

    Returns:
        (C, H * factor, W * factor) float32.
    """
    if x.ndim != 3:
        raise ValueError(f"upsample_bilinear expects (C, H, W), got shape {x.shape}")
    t = torch.from_numpy(np.asarray(x, dtype=np.float32))[None]
    return _upsample(t, factor, mode="bilinear")[0].numpy()


def downsample_bilinear(x: np.ndarray, factor: int) -> np.ndarray:
    """OpenSR-test's reduction: torch bilinear resize by 1/factor with antialiasing,
    (C, H, W) -> (C, H/f, W/f).

    Only for reproducing OpenSR-test numbers; the evaluation's own degrade-back is `degrade`.
    """
    if x.ndim != 3:
        raise ValueError(f"downsample_bilinear expects (C, H, W), got shape {x.shape}")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    return F.interpolate(t, scale_factor=1.0 / factor, mode="bilinear", antialias=True)[0].numpy()
