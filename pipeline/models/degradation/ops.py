"""Degradation operators: power-law harmonisation, Gaussian blur kernels, bicubic x1/r, noise.

The synthetic LR model of the paper, eq. (10): x_S2 = [Phi_rho(x_HR)]_(down r) + n, with
- Phi_rho a 21x21 Gaussian blur, anisotropic in training (eigen std-devs lambda_1, lambda_2 in
  [0.2, 4] HR pixels, rotation theta in [0, pi]) and isotropic in validation (sigma in [2, 4]),
- bicubic downsampling by r = 4,
- additive Gaussian noise n ~ N(0, sigma_n^2), sigma_n in [0, 25]/255 (eq. 11),
and the NAIP -> Sentinel-2 harmonisation of eq. (9): x' = (x/k)^(1/gamma_c) * k.

All functions are pure; random ones take a `torch.Generator`. This is the training degradation of the
diffusion SR only; the deterministic sensor model (Wald protocol, back-projection) is
`pipeline.models.sensor`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Per-channel gammas (R, G, B) of eq. (9) used for the NAIP training tiles, k = 1 (NAIP DN/255).
#: Derived here by matching medians (the paper fits SEN2NAIP pairs, which are not available offline):
#: median NAIP DN/255 of the two North Dakota tiles (R .293, G .382, B .276) mapped onto the median
#: L2A reflectance of the two summer BigEarthNet training patches (R .061, G .083, B .039):
#: gamma_c = ln(x_naip) / ln(x_s2).
NAIP_TO_S2_GAMMA: tuple[float, float, float] = (0.439, 0.387, 0.397)


def harmonize_power_law(
    x: torch.Tensor, gammas: torch.Tensor | tuple[float, ...], k: float = 1.0
) -> torch.Tensor:
    """Per-channel power law, eq. (9): (x/k)^(1/gamma_c) * k.

    Args:
        x: (B, C, H, W) or (C, H, W), non-negative, in units where k is the dynamic range.
        gammas: C gammas, or a (B, C) tensor of per-sample gammas.
        k: dynamic range (255 for 8-bit DN, 1 for DN/255).

    Returns:
        Tensor like x.
    """
    g = torch.as_tensor(gammas, dtype=x.dtype, device=x.device)
    if g.ndim == 1:
        g = g.view(*([1] * (x.ndim - 3)), -1, 1, 1)
    else:
        g = g.view(g.shape[0], g.shape[1], 1, 1)
    return (x.clamp_min(0) / k).pow(1.0 / g) * k


def _grid(size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(size, dtype=dtype) - (size - 1) / 2
    return torch.meshgrid(ax, ax, indexing="ij")  # yy, xx


def isotropic_gaussian_kernel(sigma: float | torch.Tensor, size: int = 21) -> torch.Tensor:
    """Isotropic Gaussian kernel(s) normalised to sum 1.

    Args:
        sigma: std-dev in HR pixels, a float or a (B,) tensor.
        size: odd kernel side.

    Returns:
        (size, size) for a float sigma, else (B, size, size); float64 -> float32.
    """
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1)
    yy, xx = _grid(size, torch.float64)
    k = torch.exp(-(xx**2 + yy**2) / (2 * s**2))
    k = (k / k.sum(dim=(-2, -1), keepdim=True)).float()
    return k[0] if not torch.is_tensor(sigma) or torch.as_tensor(sigma).ndim == 0 else k


def anisotropic_gaussian_kernel(
    lambda_1: torch.Tensor | float,
    lambda_2: torch.Tensor | float,
    theta: torch.Tensor | float,
    size: int = 21,
) -> torch.Tensor:
    """Anisotropic Gaussian kernel(s): covariance R(theta) diag(l1^2, l2^2) R(theta)^T, sum 1.

    Args:
        lambda_1, lambda_2: std-devs along the principal axes (HR pixels), floats or (B,) tensors.
        theta: rotation of the first axis (radians).
        size: odd kernel side.

    Returns:
        (B, size, size) float32 (B = 1 for float inputs).
    """
    l1 = torch.as_tensor(lambda_1, dtype=torch.float64).reshape(-1)
    l2 = torch.as_tensor(lambda_2, dtype=torch.float64).reshape(-1)
    th = torch.as_tensor(theta, dtype=torch.float64).reshape(-1)
    c, s = th.cos(), th.sin()
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (B,2,2)
    cov = rot @ torch.diag_embed(torch.stack([l1**2, l2**2], -1)) @ rot.transpose(1, 2)
    inv = torch.linalg.inv(cov)
    yy, xx = _grid(size, torch.float64)
    xy = torch.stack([xx, yy], -1).reshape(1, -1, 2)  # (1, size*size, 2)
    q = ((xy @ inv) * xy).sum(-1)  # (B, size*size)
    k = torch.exp(-0.5 * q).reshape(-1, size, size)
    return (k / k.sum(dim=(-2, -1), keepdim=True)).float()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each sample with its own kernel (same kernel on every channel), reflect padding.

    Args:
        x: (B, C, H, W).
        kernel: (k, k) shared, or (B, k, k) per sample.

    Returns:
        (B, C, H, W).
    """
    b, c, h, w = x.shape
    kk = kernel if kernel.ndim == 3 else kernel.unsqueeze(0).expand(b, -1, -1)
    ks = kk.shape[-1]
    pad = ks // 2
    mode = "reflect" if min(h, w) > pad else "replicate"
    xp = F.pad(x.reshape(1, b * c, h, w), [pad] * 4, mode=mode)
    weight = kk.to(x.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C,1,k,k)
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)


def bicubic_downsample(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Bicubic x1/factor (align_corners=False, no antialias: the blur is applied first).

    (B,C,H,W) -> (B,C,H/f,W/f).
    """
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // factor, w // factor), mode="bicubic", align_corners=False)


def add_gaussian_noise(
    x: torch.Tensor, sigma: torch.Tensor | float, generator: torch.Generator
) -> torch.Tensor:
    """Add N(0, sigma^2) noise, eq. (11); sigma a float or a (B,) tensor (image units)."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    n = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    return x + s * n


@dataclass(frozen=True, kw_only=True)
class DegradationRanges:
    """Ranges the random degradation is drawn from (paper III-A.6 / IV-B).

    Attributes:
        kernel_size: blur kernel side (21).
        iso_sigma: isotropic std-dev range, HR pixels ([2, 4]).
        aniso_lambda: anisotropic principal std-dev range, HR pixels ([0.2, 4]).
        theta: rotation range, radians ([0, pi], a full half-turn).
        noise_sigma: additive noise std-dev range, image units ([0, 25/255]).
        anisotropic: True in training, False (isotropic) in validation.
        factor: downsampling factor (4).
    """

    kernel_size: int = 21
    iso_sigma: tuple[float, float] = (2.0, 4.0)
    aniso_lambda: tuple[float, float] = (0.2, 4.0)
    theta: tuple[float, float] = (0.0, math.pi)
    noise_sigma: tuple[float, float] = (0.0, 25.0 / 255.0)
    anisotropic: bool = True
    factor: int = 4


@dataclass(frozen=True, kw_only=True)
class DegradationParams:
    """One drawn degradation per sample: kernels (B, k, k) and noise std-devs (B,)."""

    kernels: torch.Tensor
    noise_sigma: torch.Tensor
    factor: int = 4


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def sample_degradation(
    batch: int, ranges: DegradationRanges, generator: torch.Generator
) -> DegradationParams:
    """Draw `batch` random blur kernels and noise levels (CPU generator)."""
    if ranges.anisotropic:
        l1 = _uniform(batch, *ranges.aniso_lambda, generator)
        l2 = _uniform(batch, *ranges.aniso_lambda, generator)
        th = _uniform(batch, *ranges.theta, generator)
        kernels = anisotropic_gaussian_kernel(l1, l2, th, ranges.kernel_size)
    else:
        kernels = isotropic_gaussian_kernel(_uniform(batch, *ranges.iso_sigma, generator), ranges.kernel_size)
    noise = _uniform(batch, *ranges.noise_sigma, generator).float()
    return DegradationParams(kernels=kernels, noise_sigma=noise, factor=ranges.factor)


def degrade(x_hr: torch.Tensor, params: DegradationParams, generator: torch.Generator) -> torch.Tensor:
    """Eq. (10): blur with each sample's kernel, bicubic x1/r, add noise. (B,C,H,W) -> (B,C,H/r,W/r)."""
    lr = bicubic_downsample(blur(x_hr, params.kernels.to(x_hr.device)), params.factor)
    return add_gaussian_noise(lr, params.noise_sigma.to(x_hr.device), generator)
