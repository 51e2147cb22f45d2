"""Synthetic Sentinel-2-like degradations (DiffFuSR paper III-A.6) as pure functions.

Every random draw takes an explicit `torch.Generator`; nothing touches the global RNG.
Images are float32 tensors (B, C, H, W) in reflectance units (0..~1.5) unless stated.
"""

from pipeline.models.degradation.ops import (
    NAIP_TO_S2_GAMMA,
    DegradationParams,
    DegradationRanges,
    add_gaussian_noise,
    anisotropic_gaussian_kernel,
    bicubic_downsample,
    blur,
    degrade,
    harmonize_power_law,
    isotropic_gaussian_kernel,
    sample_degradation,
)

__all__ = [
    "NAIP_TO_S2_GAMMA",
    "DegradationParams",
    "DegradationRanges",
    "add_gaussian_noise",
    "anisotropic_gaussian_kernel",
    "bicubic_downsample",
    "blur",
    "degrade",
    "harmonize_power_law",
    "isotropic_gaussian_kernel",
    "sample_degradation",
]
