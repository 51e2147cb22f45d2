"""OpenSR-test style scores: consistency, synthesis and correctness (hallucination/omission/improvement).

Definitions follow OpenSR-test v1.3.3 (ESAOpenSR/opensr-test, `Metrics.compute` with its default
`Config`) and the DiffFuSR paper, section IV-E, with the normalised-difference distance:

- nd(x, y) = mean over bands of |x - y| / |x + y + 1e-8| (a per-pixel map).
- Consistency (SR against its own LR input, no reference): the SR is degraded back to the LR grid;
  reflectance = mean per-pixel L1 (mean over bands), spectral = mean per-pixel spectral angle (degrees),
  spatial = norm of the shift (LR pixels) found by phase correlation between the band means.
- Synthesis: mean per-pixel L1 between the LR upsampled bilinearly to the HR grid and the SR "harmonised"
  (histogram-matched per band to the HR, then shifted onto it by phase correlation).
- Correctness: d_ref = nd(LR_up, HR), d_im = nd(SR_harm, HR), d_om = nd(SR_harm, LR_up). Pixels where
  none of the three exceeds the 75th percentile of d_ref are dropped. With a = d_im / d_ref,
  b = d_om / d_ref and H = a + b - 1: improvement = a + b (1 - exp(-lambda H)), omission =
  b + a (1 - exp(-lambda H)), hallucination = exp(-lambda a b), lambda = 0.05; the three are turned into
  per-pixel class probabilities by a softmin with temperature T = 0.25 and each score is the mean
  probability over the kept pixels.

Where our numbers may differ from OpenSR-test's (and why):
- Degrade-back uses the project's sensor model (Gaussian MTF + boxcar, the operator that made the Wald
  input) instead of OpenSR-test's bilinear antialiased resize; consistency is therefore measured against
  the degradation the data really went through. Expect small differences in reflectance/spectral.
- Phase correlation is our numpy implementation of the same algorithm scikit-image uses
  (phase-normalised cross-power spectrum, 1/50-pixel refinement by a local upsampled DFT); shifts larger
  than 5 px are rejected (NaN) as satalign does. The warp is scipy's bilinear shift with edge replication
  (satalign: OpenCV warpAffine, bilinear, replicate); sub-pixel interpolation may differ in the last digit.
- Histogram matching is the same cumulative-histogram interpolation as scikit-image's
  `match_histograms`, but NaN pixels are left out of both histograms (OpenSR-test has no nodata).
- Nodata (NaN) pixels are dropped from every mean; OpenSR-test assumes complete images.
- The border crop (OpenSR-test: 16 HR pixels) is a parameter here; reports state the value used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipeline.errors import ConfigError
from pipeline.eval.resample import degrade, downsample_bilinear, upsample_bilinear

_EPS = 1e-8


@dataclass(frozen=True, kw_only=True)
class OpenSRConfig:
    """Parameters of the OpenSR-test scores (defaults = OpenSR-test v1.3.3 `Config`).

    Attributes:
        lam: lambda of the improvement, omission and hallucination functions (im/om/ha_score).
        temperature: softmin temperature T that turns the three into class probabilities.
        mask_quantile: pixels are kept where d_ref, d_im or d_om exceeds this quantile of d_ref.
        border_px: HR pixels cropped from each side before scoring (rounded down to whole LR pixels;
            no crop when it would leave nothing).
        max_shift_px: a phase-correlation shift longer than this (pixels) is rejected as unreliable.
        upsample_factor: sub-pixel precision 1/upsample_factor of the phase correlation.
        downsampling: how consistency brings the SR back to the LR grid: "sensor" (the project's
            sensor model, default) or "bilinear" (OpenSR-test's bilinear antialiased resize; with it our
            scores reproduce opensr-test 1.3.3 to float32 precision).
    """

    lam: float = 0.05
    temperature: float = 0.25
    mask_quantile: float = 0.75
    border_px: int = 16
    max_shift_px: float = 5.0
    upsample_factor: int = 50
    downsampling: str = "sensor"

    def __post_init__(self) -> None:
        if self.downsampling not in ("sensor", "bilinear"):
            raise ConfigError(f"downsampling must be 'sensor' or 'bilinear', got {self.downsampling!r}")
        if self.border_px < 0 or self.temperature <= 0 or not 0 < self.mask_quantile < 1:
            raise ConfigError(
                f"invalid OpenSRConfig {self}: need border_px >= 0, temperature > 0, 0 < mask_quantile < 1"
            )


@dataclass(frozen=True, kw_only=True)
class CorrectnessResult:
    """Correctness scores and their per-pixel maps (HR grid, NaN = not scored)."""

    improvement: float
    omission: float
    hallucination: float
    maps: dict[str, np.ndarray] = field(repr=False)


# --------------------------------------------------------------------------- distances (per-pixel maps)
def nd_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Normalised difference |x - y| / |x + y + 1e-8|, averaged over bands: (C, H, W) -> (H, W)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _nanmean0(np.abs(x - y) / np.abs(x + y + _EPS))


def l1_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Absolute difference averaged over bands: (C, H, W) -> (H, W)."""
    return _nanmean0(np.abs(x - y))


def sad_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pixel spectral angle in degrees between two (C, H, W) stacks -> (H, W); NaN if undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(x * y, axis=0) / (np.linalg.norm(x, axis=0) * np.linalg.norm(y, axis=0))
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _nanmean0(a: np.ndarray) -> np.ndarray:
    valid = np.isfinite(a)
    n = valid.sum(axis=0)
    s = np.where(valid, a, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _nanmean(a: np.ndarray) -> float:
    v = a[np.isfinite(a)]
    return float(v.mean()) if v.size else math.nan


# --------------------------------------------------------------------------- registration
def _upsampled_dft(data: np.ndarray, region: int, factor: int, offsets: np.ndarray) -> np.ndarray:
    """Cross-correlation sampled on a `region`^2 grid at 1/factor pixel spacing (Guizar-Sicairos 2008)."""
    for n, off in zip(data.shape[::-1], offsets[::-1], strict=True):
        kernel = np.exp(-2j * np.pi * (np.arange(region) - off)[:, None] * np.fft.fftfreq(n, factor))
        data = np.tensordot(kernel, data, axes=(1, -1))
    return data


def phase_correlation_shift(reference: np.ndarray, moving: np.ndarray, *, upsample_factor: int = 50):
    """Shift (dy, dx), in pixels, that registers `moving` onto `reference` (phase correlation).

    Args:
        reference: (H, W) image; NaN is replaced by the image mean.
        moving: (H, W) image of the same shape.
        upsample_factor: the shift is refined to 1/upsample_factor pixel.

    Returns:
        numpy array [dy, dx]; shifting `moving` by it (out(p) = moving(p - shift)) aligns it.
    """
    ref = _fill(reference)
    mov = _fill(moving)
    product = np.fft.fft2(ref) * np.conj(np.fft.fft2(mov))
    product /= np.maximum(np.abs(product), 100 * np.finfo(float).eps)
    corr = np.fft.ifft2(product)
    peak = np.array(np.unravel_index(np.argmax(np.abs(corr)), corr.shape), dtype=float)
    shape = np.array(corr.shape, dtype=float)
    peak[peak > np.fix(shape / 2)] -= shape[peak > np.fix(shape / 2)]
    if upsample_factor > 1:
        peak = np.round(peak * upsample_factor) / upsample_factor
        region = int(np.ceil(upsample_factor * 1.5))
        centre = np.fix(region / 2.0)
        offsets = centre - peak * upsample_factor
        local = np.conj(_upsampled_dft(np.conj(product), region, upsample_factor, offsets))
        fine = np.array(np.unravel_index(np.argmax(np.abs(local)), local.shape), dtype=float)
        peak = peak + (fine - centre) / upsample_factor
    peak[shape == 1] = 0.0
    return peak


def _fill(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if np.isfinite(a).all():
        return a
    return np.where(np.isfinite(a), a, np.nanmean(a) if np.isfinite(a).any() else 0.0)


def shift_image(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift every band of (C, H, W) by (dy, dx) pixels, bilinear, edges replicated."""
    return np.stack([ndimage.shift(b, shift, order=1, mode="nearest") for b in x]).astype(np.float32)


def align_to(x: np.ndarray, reference: np.ndarray, cfg: OpenSRConfig) -> tuple[np.ndarray, float]:
    """Register (C, H, W) `x` onto `reference` using the band means; returns (aligned, shift norm px).

    A shift longer than `cfg.max_shift_px` is not applied and its norm is reported as NaN.
    """
    shift = phase_correlation_shift(_nanmean0(reference), _nanmean0(x), upsample_factor=cfg.upsample_factor)
    norm = float(np.hypot(*shift))
    if norm > cfg.max_shift_px:
        return x, math.nan
    return (shift_image(x, shift) if norm > 0 else x), norm


def histogram_match(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Match each band's cumulative histogram of (C, H, W) `x` to the same band of `reference`; NaN kept."""
    out = np.full(x.shape, np.nan, dtype=np.float64)
    for b in range(x.shape[0]):
        src_ok = np.isfinite(x[b])
        ref_vals = reference[b][np.isfinite(reference[b])]
        if not src_ok.any() or not ref_vals.size:
            continue
        src = x[b][src_ok]
        _, s_idx, s_cnt = np.unique(src, return_inverse=True, return_counts=True)
        r_vals, r_cnt = np.unique(ref_vals, return_counts=True)
        s_q = np.cumsum(s_cnt) / src.size
        r_q = np.cumsum(r_cnt) / ref_vals.size
        out[b][src_ok] = np.interp(s_q, r_q, r_vals)[s_idx]
    return out.astype(np.float32)


def crop_border(x: np.ndarray, px: int) -> np.ndarray:
    """Drop `px` pixels from each side of the last two axes (0 = unchanged)."""
    return x if px <= 0 else x[..., px:-px, px:-px]


# --------------------------------------------------------------------------- the three families
def consistency(lr: np.ndarray, sr: np.ndarray, factor: int, *, cfg: OpenSRConfig | None = None) -> dict:
    """Consistency of an SR stack with its own LR input.

    Args:
        lr: (C, h, w) LR input reflectance.
        sr: (C, h * factor, w * factor) SR reflectance of the same bands.
        factor: SR factor between the two grids.
        cfg: border crop (HR px; LR crop = border // factor) and registration options.

    Returns:
        dict with reflectance_l1, spectral_sad_deg, spatial_shift_px (LR pixels) and the maps
        "reflectance", "spectral" on the LR grid (key "maps").
    """
    cfg = cfg or OpenSRConfig()
    lr_c, sr_c, _ = _crop_pair(lr, sr, factor, cfg.border_px)
    sr_lr = degrade(sr_c, factor) if cfg.downsampling == "sensor" else downsample_bilinear(sr_c, factor)
    return consistency_degraded(lr_c, sr_lr, cfg=cfg)


def consistency_degraded(lr: np.ndarray, sr_lr: np.ndarray, *, cfg: OpenSRConfig | None = None) -> dict:
    """Consistency scores of an LR input and an SR already brought back to its grid (both (C, h, w))."""
    cfg = cfg or OpenSRConfig()
    if sr_lr.shape != lr.shape:
        raise ValueError(f"SR degraded back has shape {sr_lr.shape}, LR has {lr.shape}")
    refl = l1_map(lr, sr_lr)
    spec = sad_map(lr, sr_lr)
    rgb = slice(0, 3) if lr.shape[0] >= 3 else slice(0, 1)
    _, shift = align_to(lr[rgb], sr_lr[rgb], cfg)
    return {
        "reflectance_l1": _nanmean(refl),
        "spectral_sad_deg": _nanmean(spec),
        "spatial_shift_px": shift,
        "maps": {"reflectance": refl, "spectral": spec},
    }


def harmonise(sr: np.ndarray, hr: np.ndarray, cfg: OpenSRConfig) -> np.ndarray:
    """SR without systematic error: histogram-matched to `hr`, then shifted onto it."""
    return align_to(histogram_match(sr, hr), hr, cfg)[0]


def synthesis(
    lr: np.ndarray,
    sr: np.ndarray,
    factor: int,
    *,
    hr: np.ndarray | None = None,
    cfg: OpenSRConfig | None = None,
) -> float:
    """Mean L1 between the bilinearly upsampled LR and the harmonised SR (higher = more new detail).

    Without `hr` the SR is harmonised to itself (a no-op), as OpenSR-test does.
    """
    cfg = cfg or OpenSRConfig()
    lr_c, sr_c, border = _crop_pair(lr, sr, factor, cfg.border_px)
    # harmonising the SR to itself is the identity (same histogram, zero shift)
    sr_harm = sr_c if hr is None else harmonise(sr_c, crop_border(hr, border), cfg)
    return _nanmean(l1_map(upsample_bilinear(lr_c, factor), sr_harm))


def correctness_scores(
    d_ref: np.ndarray, d_im: np.ndarray, d_om: np.ndarray, cfg: OpenSRConfig
) -> CorrectnessResult:
    """Improvement / omission / hallucination from the three distance maps (H, W)."""
    ref_vals = d_ref[np.isfinite(d_ref)]
    if not ref_vals.size:
        nan_map = np.full(d_ref.shape, np.nan)
        return CorrectnessResult(
            improvement=math.nan,
            omission=math.nan,
            hallucination=math.nan,
            maps={"improvement": nan_map, "omission": nan_map, "hallucination": nan_map},
        )
    # k-th smallest value, k = int(q * n) (1-based), as torch.kthvalue in OpenSR-test.
    k = max(1, int(cfg.mask_quantile * ref_vals.size))
    thr = float(np.partition(ref_vals, k - 1)[k - 1])
    keep = (d_ref > thr) | (d_im > thr) | (d_om > thr)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(keep, d_im / d_ref, np.nan)
        b = np.where(keep, d_om / d_ref, np.nan)
        h = a + b - 1.0
        im = a + b * (1.0 - np.exp(-h * cfg.lam))
        om = b + a * (1.0 - np.exp(-h * cfg.lam))
        ha = np.exp(-a * b * cfg.lam)
        stack = np.stack([im, om, ha])
        # softmin over the three classes: exp(-x/T) / sum exp(-x/T)
        z = np.exp(-stack / cfg.temperature)
        prob = z / z.sum(axis=0)
    return CorrectnessResult(
        improvement=_nanmean(prob[0]),
        omission=_nanmean(prob[1]),
        hallucination=_nanmean(prob[2]),
        maps={"improvement": prob[0], "omission": prob[1], "hallucination": prob[2]},
    )


def correctness(
    lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, factor: int, *, cfg: OpenSRConfig | None = None
) -> CorrectnessResult:
    """Correctness of an SR stack against the HR reference (all (C, ., .) reflectance, HR = SR grid)."""
    cfg = cfg or OpenSRConfig()
    lr_c, sr_c, border = _crop_pair(lr, sr, factor, cfg.border_px)
    hr_c = crop_border(hr, border)
    lr_up = upsample_bilinear(lr_c, factor)
    sr_harm = harmonise(sr_c, hr_c, cfg)
    return correctness_scores(nd_map(lr_up, hr_c), nd_map(sr_harm, hr_c), nd_map(sr_harm, lr_up), cfg)


def _crop_pair(
    lr: np.ndarray, sr: np.ndarray, factor: int, border_px: int
) -> tuple[np.ndarray, np.ndarray, int]:
    if sr.shape[-2] != lr.shape[-2] * factor or sr.shape[-1] != lr.shape[-1] * factor:
        raise ValueError(f"SR shape {sr.shape} is not LR shape {lr.shape} times {factor}")
    # the border is rounded down to whole LR pixels so both crops cover the same ground
    lr_border = border_px // factor
    if 2 * lr_border >= min(lr.shape[-2:]):
        lr_border = 0
    return crop_border(lr, lr_border), crop_border(sr, lr_border * factor), lr_border * factor
