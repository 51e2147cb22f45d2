"""Full-reference image-quality metrics for super-resolved reflectance (pure numpy, NaN-aware).

Every function takes a prediction and a reference of the same shape, in reflectance units (float, about
0..1), and scores only the pixels that are finite in both (NaN = nodata). Conventions, stated once here
and repeated in every report:

- PSNR: 10 log10(data_range^2 / MSE) with a fixed `data_range` (default 1.0 reflectance), so scores are
  comparable across bands, scenes and methods (a per-band max would reward dark bands differently).
- SSIM: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 = 0.01,
  K2 = 0.03, population (co)variances; averaged over the pixels whose whole window is valid and inside the
  image (the same as scikit-image's `structural_similarity(gaussian_weights=True,
  use_sample_covariance=False)` on NaN-free data).
- SAM: mean over pixels of the angle, in degrees, between the predicted and the reference spectra.
- ERGAS: 100 * (h / l) * sqrt(mean_b (RMSE_b / mu_b)^2), where h / l is the ratio of the high- to the
  low-resolution pixel size (1/4 for a x4 protocol) and mu_b the mean of the reference band. Some
  reference code multiplies by the *square* of the resolution ratio or uses l / h (x16 for x4); numbers
  from those are not comparable with ours.
- R^2: the coefficient of determination of the prediction against the reference,
  1 - sum((ref - pred)^2) / sum((ref - mean(ref))^2) (can be negative), not the squared correlation.
- Cross-correlation: Pearson's correlation coefficient between prediction and reference.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: SSIM constants and window (Wang et al. 2004).
SSIM_K1: float = 0.01
SSIM_K2: float = 0.03
SSIM_SIGMA: float = 1.5
SSIM_TRUNCATE: float = 3.5


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred, ref


def valid_mask(*arrays: np.ndarray) -> np.ndarray:
    """Boolean mask of the elements finite in every array (all of the same shape)."""
    mask = np.ones(np.shape(arrays[0]), dtype=bool)
    for a in arrays:
        mask &= np.isfinite(a)
    return mask


def _valid_values(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _check_pair(pred, ref)
    m = valid_mask(pred, ref)
    return pred[m], ref[m]


def mse(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean squared error over valid pixels (reflectance^2); NaN when no pixel is valid."""
    p, r = _valid_values(pred, ref)
    return float(np.mean((p - r) ** 2)) if p.size else math.nan


def rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """Root mean squared error over valid pixels (reflectance)."""
    return math.sqrt(mse(pred, ref))


def mae(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute error (L1) over valid pixels (reflectance)."""
    p, r = _valid_values(pred, ref)
    return float(np.mean(np.abs(p - r))) if p.size else math.nan


def psnr(pred: np.ndarray, ref: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE); inf for a perfect prediction."""
    e = mse(pred, ref)
    if math.isnan(e):
        return math.nan
    if e == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / e)


def r2(pred: np.ndarray, ref: np.ndarray) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot of `pred` against `ref` (can be negative)."""
    p, r = _valid_values(pred, ref)
    if p.size < 2:
        return math.nan
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    ss_res = float(np.sum((r - p) ** 2))
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - ss_res / ss_tot


def cross_correlation(pred: np.ndarray, ref: np.ndarray) -> float:
    """Pearson correlation coefficient between prediction and reference; NaN if either is constant."""
    p, r = _valid_values(pred, ref)
    if p.size < 2:
        return math.nan
    dp, dr = p - p.mean(), r - r.mean()
    denom = math.sqrt(float(np.sum(dp**2)) * float(np.sum(dr**2)))
    return float(np.sum(dp * dr)) / denom if denom > 0 else math.nan


def ssim(pred: np.ndarray, ref: np.ndarray, *, data_range: float = 1.0) -> float:
    """Mean structural similarity of one band.

    Args:
        pred: (H, W) predicted reflectance; NaN = nodata.
        ref: (H, W) reference reflectance; NaN = nodata.
        data_range: dynamic range L of the data (C1 = (K1 L)^2, C2 = (K2 L)^2).

    Returns:
        Mean SSIM over the pixels whose whole Gaussian window is valid and inside the image; NaN when
        there is none (image smaller than 11x11 or too much nodata).
    """
    pred, ref = _check_pair(pred, ref)
    if pred.ndim != 2:
        raise ValueError(f"ssim expects (H, W) arrays, got shape {pred.shape}")
    valid = valid_mask(pred, ref)
    x = np.where(valid, pred, 0.0)
    y = np.where(valid, ref, 0.0)

    def filt(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    # A pixel counts when every pixel of its window is valid and the window lies inside the image.
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    window_ok = ndimage.minimum_filter(valid.astype(np.uint8), size=2 * pad + 1, mode="constant", cval=0)
    keep = window_ok.astype(bool)
    if not keep.any():
        return math.nan
    return float(np.mean(s[keep]))


def sam_deg(pred: np.ndarray, ref: np.ndarray) -> float:
    """Spectral angle mapper: mean angle (degrees) between predicted and reference spectra.

    Args:
        pred: (C, H, W) predicted reflectance, C >= 2.
        ref: (C, H, W) reference reflectance.

    Returns:
        Mean over pixels valid in every band of both arrays with non-zero spectra; NaN if none.
    """
    pred, ref = _check_pair(pred, ref)
    if pred.ndim != 3:
        raise ValueError(f"sam_deg expects (C, H, W) arrays, got shape {pred.shape}")
    m = valid_mask(pred, ref).all(axis=0)
    p = pred[:, m]
    r = ref[:, m]
    norms = np.linalg.norm(p, axis=0) * np.linalg.norm(r, axis=0)
    ok = norms > 0
    if not ok.any():
        return math.nan
    cos = np.clip(np.sum(p[:, ok] * r[:, ok], axis=0) / norms[ok], -1.0, 1.0)
    return float(np.degrees(np.mean(np.arccos(cos))))


def ergas(pred: np.ndarray, ref: np.ndarray, *, ratio: float) -> float:
    """ERGAS = 100 * (h / l) * sqrt(mean_b (RMSE_b / mu_b)^2).

    Args:
        pred: (C, H, W) predicted reflectance.
        ref: (C, H, W) reference reflectance.
        ratio: resolution ratio l / h (low- over high-resolution pixel size), e.g. 4 for the Wald x4
            protocol; the formula uses its inverse h / l.

    Returns:
        ERGAS (dimensionless, lower is better); each band uses its own valid pixels.
    """
    pred, ref = _check_pair(pred, ref)
    if pred.ndim != 3:
        raise ValueError(f"ergas expects (C, H, W) arrays, got shape {pred.shape}")
    if ratio <= 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    terms = []
    for b in range(pred.shape[0]):
        p, r = _valid_values(pred[b], ref[b])
        if not p.size:
            continue
        mu = float(np.mean(r))
        terms.append((math.sqrt(float(np.mean((p - r) ** 2))) / mu) ** 2)
    if not terms:
        return math.nan
    return 100.0 / ratio * math.sqrt(float(np.mean(terms)))


def band_scores(pred: np.ndarray, ref: np.ndarray, *, data_range: float = 1.0) -> dict[str, float]:
    """All single-band metrics for one (H, W) band: psnr, ssim, rmse, mae, r2, cc."""
    return {
        "psnr": psnr(pred, ref, data_range=data_range),
        "ssim": ssim(pred, ref, data_range=data_range),
        "rmse": rmse(pred, ref),
        "mae": mae(pred, ref),
        "r2": r2(pred, ref),
        "cc": cross_correlation(pred, ref),
    }
