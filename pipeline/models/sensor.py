"""The Sentinel-2 sensor model and its back-projection: the one owner of both in the project.

`wald_degrade` simulates how a coarser sensor would have seen an image: an MTF-like isotropic Gaussian
blur followed by a boxcar average with stride `factor` (the pixel integration of the detector,
DiffFuSR paper section III-B.1). `upsample` is the matching interpolation back to a finer grid, and
`backproject` corrects a fine-grid estimate so that the sensor model maps it onto the measured bands.

Users: the Wald evaluation (`pipeline.eval`), the fusion training data (`pipeline.train.wald`,
`train.srguide`), the fusion networks' output back-projection and the diffusion SR's low-frequency
consistency (`models.fusion.model`, `models.diffusion.model`). The diffusion SR's *training*
degradation (random blur kernels, bicubic x1/4, noise) is another thing: `pipeline.models.degradation`.

Default blur: the Gaussian's sigma is chosen so that the whole sensor (Gaussian x boxcar) has an MTF of
`DEFAULT_MTF_AT_NYQUIST` = 0.3 at the Nyquist frequency of the coarse grid, which is the order of the
Sentinel-2 MSI system MTF. The boxcar of width `factor` alone gives sinc(1/2) = 2/pi = 0.637 there, so the
Gaussian supplies the rest: sigma = factor * sqrt(-2 ln(0.3 / 0.637)) / pi = 0.391 * factor (in pixels of
the fine grid). A Gaussian's MTF is exp(-2 pi^2 sigma^2 f^2), f in cycles per fine pixel,
f_Nyq = 1/(2 factor).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Target system MTF (Gaussian x boxcar) at the coarse grid's Nyquist frequency.
DEFAULT_MTF_AT_NYQUIST: float = 0.3

#: MTF of a boxcar of width `factor` at the coarse Nyquist frequency: sinc(1/2) = 2/pi.
_BOXCAR_MTF_AT_NYQUIST: float = 2.0 / math.pi


def default_sigma(factor: int, mtf_at_nyquist: float = DEFAULT_MTF_AT_NYQUIST) -> float:
    """Gaussian sigma (fine-grid pixels) that, with the boxcar, gives `mtf_at_nyquist` at the coarse Nyquist.

    Args:
        factor: integer downsampling factor (>= 1).
        mtf_at_nyquist: wanted system MTF at the coarse Nyquist, in (0, 2/pi); lower is blurrier.

    Returns:
        sigma in pixels of the fine grid; 0.0 for factor 1.
    """
    if factor <= 1:
        return 0.0
    gain = mtf_at_nyquist / _BOXCAR_MTF_AT_NYQUIST
    if not 0.0 < gain < 1.0:
        raise ValueError(
            f"mtf_at_nyquist must lie in (0, {_BOXCAR_MTF_AT_NYQUIST:.3f}), got {mtf_at_nyquist}"
        )
    return factor * math.sqrt(-2.0 * math.log(gain)) / math.pi


def gaussian_kernel1d(sigma: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, length 2*ceil(3 sigma)+1 (sum 1)."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable isotropic Gaussian blur per channel, edges replicated (a constant stays constant).

    Args:
        x: (B, C, H, W) float tensor.
        sigma: standard deviation in pixels; <= 0 returns `x` unchanged.

    Returns:
        (B, C, H, W) tensor of x's dtype.
    """
    if sigma <= 0:
        return x
    b, c, h, w = x.shape
    k = gaussian_kernel1d(sigma, dtype=x.dtype).to(x.device)
    r = (k.numel() - 1) // 2
    y = x.reshape(b * c, 1, h, w)
    y = F.pad(y, (r, r, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def wald_degrade(x: torch.Tensor, factor: int, *, sigma: float | None = None) -> torch.Tensor:
    """Simulate a sensor `factor` times coarser: Gaussian blur, then boxcar average with stride `factor`.

    Args:
        x: (B, C, H, W) float tensor (reflectance or normalised units), NaN-free.
        factor: integer downsampling factor >= 1 (4, 8, 24 for the 10/20/60 m groups to 2.5 m;
            the Wald x4 evaluation degrades every band by 4).
        sigma: Gaussian sigma in fine-grid pixels; None -> `default_sigma(factor)` (system MTF 0.3 at
            Nyquist); 0 -> boxcar only. Training draws it at random around the default (blind blur).

    Returns:
        (B, C, H // factor, W // factor) tensor; trailing rows/columns that do not fill a whole coarse
        pixel are dropped. The boxcar of a constant image is that constant.
    """
    if x.dim() != 4:
        raise ValueError(f"wald_degrade expects (B, C, H, W), got shape {tuple(x.shape)}")
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if factor == 1:
        return x
    if x.shape[-2] < factor or x.shape[-1] < factor:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than one coarse pixel of factor {factor}")
    s = default_sigma(factor) if sigma is None else float(sigma)
    y = gaussian_blur(x, s)
    return F.avg_pool2d(y, kernel_size=factor, stride=factor)


def wald_degrade_strided(x: torch.Tensor, factor: int) -> torch.Tensor:
    """`wald_degrade` with the default sigma, computed only at the samples the boxcar keeps.

    Blur and boxcar are one linear filter (the Gaussian taps convolved with the box), evaluated with stride
    `factor` along each axis, so the fine-grid blur is never materialised: ~1/factor of the multiply-adds of
    each pass. Equal to `wald_degrade(x, factor)` up to float rounding (another summation order:
    tests/models/test_sensor.py); used where only figures are needed (`inference.quality`), while training,
    evaluation and the back-projection keep `wald_degrade`, whose results the recorded numbers came from.
    """
    factor = int(factor)
    if factor <= 1:
        return x
    b, c, h, w = x.shape
    k = gaussian_kernel1d(default_sigma(factor), dtype=torch.float64)
    r = (k.numel() - 1) // 2
    taps = F.conv1d(
        F.pad(k, (factor - 1, factor - 1)).view(1, 1, -1), torch.ones(1, 1, factor, dtype=k.dtype)
    )
    taps = (taps.view(-1) / factor).to(x.dtype).to(x.device)  # length 2r + factor
    y = F.pad(x.reshape(b * c, 1, h, w), (r, r, 0, 0), mode="replicate")
    y = F.conv2d(y, taps.view(1, 1, 1, -1), stride=(1, factor))
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    y = F.conv2d(y, taps.view(1, 1, -1, 1), stride=(factor, 1))
    return y.reshape(b, c, h // factor, w // factor)


def backproject(
    x: torch.Tensor, lr: torch.Tensor, factor: int, *, iterations: int, sigma: float | None = None
) -> torch.Tensor:
    """Correct `x` so that the sensor model maps it onto `lr` (iterative back-projection).

    Each iteration adds the bicubic upsampling of the residual `lr - wald_degrade(x, factor)`: the low
    frequencies the sensor measured are restored (the blur of the degradation is undone where `x` lacks it)
    and the detail above the sensor's pass band is kept. Linear and exact for constants, so it commutes with
    any per-band affine normalisation; differentiable (usable inside training).

    Args:
        x: (B, C, f H, f W) estimate on the fine grid.
        lr: (B, C, H, W) the measured coarse bands (same units as `x`).
        factor: integer ratio f of the grids.
        iterations: number of corrections (0 returns `x`); 5 converges to within 0.02 dB here.
        sigma: sensor Gaussian in fine pixels; None -> `default_sigma(factor)` (system MTF 0.3 at Nyquist).

    Returns:
        (B, C, f H, f W) tensor.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    h, w = lr.shape[-2:]
    if tuple(x.shape[-2:]) != (h * factor, w * factor) or x.shape[:2] != lr.shape[:2]:
        raise ValueError(f"backproject: x {tuple(x.shape)} is not lr {tuple(lr.shape)} x {factor}")
    for _ in range(iterations):
        x = x + upsample(lr - wald_degrade(x, factor, sigma=sigma), factor, mode="bicubic")
    return x


def upsample(x: torch.Tensor, factor: int, mode: str = "bilinear") -> torch.Tensor:
    """Interpolate (B, C, H, W) to (B, C, H*factor, W*factor), pixel-centre aligned (align_corners=False).

    Args:
        x: (B, C, H, W) float tensor.
        factor: integer upsampling factor >= 1.
        mode: "bilinear" or "bicubic" (bicubic may overshoot at edges; not clipped).
    """
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    factor = int(factor)
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)
