"""Per-band normalisation of reflectance for the fusion networks (the statistics live in the net config)."""

from __future__ import annotations

import torch

from pipeline.models.fusion.config import BAND_MEAN, BAND_STD


def normalise(x: torch.Tensor, bands: tuple[str, ...] | list[str]) -> torch.Tensor:
    """(B, C, H, W) reflectance -> (x - mean) / std per band (C == len(bands))."""
    mean = torch.tensor([BAND_MEAN[b] for b in bands], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor([BAND_STD[b] for b in bands], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def denormalise(x: torch.Tensor, bands: tuple[str, ...] | list[str]) -> torch.Tensor:
    """Inverse of `normalise`."""
    mean = torch.tensor([BAND_MEAN[b] for b in bands], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor([BAND_STD[b] for b in bands], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * std + mean
