"""Blind diffusion super-resolution of the RGB bands, 10 m -> 2.5 m (DiffFuSR stage 1).

Public surface::

    from pipeline.models.diffusion import load_sr_model
    model = load_sr_model(weights=None, device="cpu")      # None -> shipped pipeline/weights/sr_small
    out = model.super_resolve(rgb, steps=20, generator=g, eta=0.0)   # (B,3,h,w) -> (B,3,4h,4w)
    mean, std = model.super_resolve_with_uncertainty(rgb, num_samples=4, generator=g)
"""

from pipeline.models.diffusion.config import PRESETS, SRConfig, get_preset
from pipeline.models.diffusion.model import (
    DEFAULT_WEIGHTS,
    SRDiffusion,
    inference_state_dict,
    load_sr_model,
    save_sr_model,
)
from pipeline.models.diffusion.schedule import CosineSchedule, DDIMSampler

__all__ = [
    "DEFAULT_WEIGHTS",
    "PRESETS",
    "CosineSchedule",
    "DDIMSampler",
    "SRConfig",
    "SRDiffusion",
    "get_preset",
    "inference_state_dict",
    "load_sr_model",
    "save_sr_model",
]
