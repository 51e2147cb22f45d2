"""Super-resolution methods behind one interface: native band groups in, 12 bands at 2.5 m out.

    method = get_method("gs")
    out = method(b10, b20, b60, generator=g)   # (B,12,4H,4W) torch.float32, S2 order

Inputs are NaN-free reflectance tensors (nodata is filled and re-applied by `predict.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from pipeline.config import METHODS, MethodOptions
from pipeline.errors import ConfigError
from pipeline.models import baselines

__all__ = ["METHODS", "MethodOptions", "SuperResolver", "get_method"]


class SuperResolver(Protocol):
    """What every method provides."""

    name: str

    def __call__(
        self, b10: torch.Tensor, b20: torch.Tensor, b60: torch.Tensor, *, generator: torch.Generator
    ) -> torch.Tensor: ...


@dataclass
class Bicubic:
    name: str = "bicubic"

    def __call__(self, b10, b20, b60, *, generator):
        return baselines.bicubic(b10, b20, b60)


@dataclass
class GramSchmidt:
    name: str = "gs"

    def __call__(self, b10, b20, b60, *, generator):
        return baselines.gram_schmidt(b10, b20, b60)


@dataclass
class DiffFuSR:
    """Diffusion SR of the RGB, then the three fusion networks guided by the SR RGB."""

    options: MethodOptions
    name: str = "difffusr"
    _sr: Any = field(default=None, repr=False)
    _fusion: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from pipeline.models.diffusion import load_sr_model
        from pipeline.models.fusion import load_fusion_model

        self._sr = load_sr_model(weights=self.options.sr_weights, device=self.options.device)
        self._fusion = load_fusion_model(weights=self.options.fusion_weights, device=self.options.device)

    def __call__(self, b10, b20, b60, *, generator):
        device = self.options.device
        b10, b20, b60 = (x.to(device) for x in (b10, b20, b60))
        sr_rgb = self._sr.super_resolve(baselines.rgb_of(b10), steps=self.options.steps, generator=generator)
        return self._fusion.fuse(b10, b20, b60, sr_rgb).float().cpu()


def get_method(name: str, options: MethodOptions | None = None) -> SuperResolver:
    """Build a method by name; raises ConfigError for an unknown name."""
    options = options or MethodOptions()
    if name == "bicubic":
        return Bicubic()
    if name == "gs":
        return GramSchmidt()
    if name == "difffusr":
        return DiffFuSR(options=options)
    raise ConfigError(f"--method {name!r} is not one of {', '.join(METHODS)}")
