"""Learned band-group fusion to 2.5 m (DiffFuSR stage 2): three two-branch RRDB networks.

Public API: `load_fusion_model(weights=None, device="cpu").fuse(b10, b20, b60, guide_rgb)`.
"""

from pipeline.models.fusion.config import PRESETS, FusionNetConfig, preset_configs
from pipeline.models.fusion.model import (
    FusionModel,
    load_fusion_model,
    save_fusion_model,
    set_injection_gain,
    set_self_ensemble,
)
from pipeline.models.fusion.net import FusionGroupNet

__all__ = [
    "PRESETS",
    "FusionGroupNet",
    "FusionModel",
    "FusionNetConfig",
    "load_fusion_model",
    "preset_configs",
    "save_fusion_model",
    "set_injection_gain",
    "set_self_ensemble",
]
