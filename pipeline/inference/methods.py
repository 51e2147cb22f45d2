"""Super-resolution methods behind one interface: native band groups in, 12 bands at 2.5 m out.

    method = get_method("gs")
    out = method(b10, b20, b60, generators=gens)   # (B,12,4H,4W) float32, S2 order; a generator per tile

Inputs are NaN-free reflectance tensors (nodata is filled and re-applied by `predict.py`). A method computes
the whole batch in one forward pass of each network, and sample i is bit-identical to what it gives for that
tile alone with generator i (the networks are batch-invariant: pipeline.models.batching).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from pipeline.config import METHODS, MethodOptions
from pipeline.errors import ConfigError
from pipeline.models import baselines

#: ATen (ConvParams::use_mkldnn) runs a batch-1 3x3 float32 convolution whose input has at most this many
#: elements with its own GEMM instead of oneDNN, which rounds differently: the smallest such input of the
#: learned method is the LR RGB (3 x h x w), so a single tile below 3hw = 20480 (h = w < 83 px) is forwarded
#: as a batch of two to get the kernels of every larger batch (tests/inference/test_batching.py).
ATEN_SMALL_CONV = 20480

__all__ = ["METHODS", "MethodOptions", "SuperResolver", "get_method"]


class SuperResolver(Protocol):
    """What every method provides."""

    name: str

    def __call__(
        self,
        b10: torch.Tensor,
        b20: torch.Tensor,
        b60: torch.Tensor,
        *,
        generators: Sequence[torch.Generator],
    ) -> torch.Tensor: ...


@dataclass
class Bicubic:
    name: str = "bicubic"

    def __call__(self, b10, b20, b60, *, generators):
        return baselines.bicubic(b10, b20, b60)


@dataclass
class GramSchmidt:
    name: str = "gs"

    def __call__(self, b10, b20, b60, *, generators):
        return baselines.gram_schmidt(b10, b20, b60)


@dataclass
class DiffFuSR:
    """Diffusion SR of the RGB, then the three fusion networks guided by the SR RGB.

    What a run's manifest should show, resolved at load: `steps` (the option, or the SR weights'
    `default_steps`), `precision` (the concrete one: "auto" resolved for this device) and `self_ensemble`
    (per fusion group: the option, or the fusion weights' setting).
    """

    options: MethodOptions
    name: str = "difffusr"
    steps: int = field(init=False)
    precision: str = field(init=False)
    self_ensemble: dict[str, int] = field(init=False)
    _sr: Any = field(default=None, repr=False)
    _fusion: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from pipeline.models.batching import pin_pointwise_convs
        from pipeline.models.diffusion import load_sr_model
        from pipeline.models.fusion import load_fusion_model, set_self_ensemble
        from pipeline.models.precision import memory_format, resolve_precision

        device = self.options.device
        self.precision = resolve_precision(self.options.precision, torch.device(device).type)
        fmt = memory_format(self.precision)
        self._sr = load_sr_model(weights=self.options.sr_weights, device=device).to(memory_format=fmt)
        self._fusion = load_fusion_model(weights=self.options.fusion_weights, device=device).to(
            memory_format=fmt
        )
        if self.options.self_ensemble is not None:
            set_self_ensemble(self._fusion, self.options.self_ensemble)
        for model in (self._sr, self._fusion):
            pin_pointwise_convs(model)  # the same kernels at every batch size, whatever the thread count
        self.steps = self.options.steps if self.options.steps is not None else self._sr.config.default_steps
        self.self_ensemble = {name: cfg.self_ensemble for name, cfg in self._fusion.configs.items()}

    @property
    def fusion_model(self):
        """The loaded fusion model (e.g. for a benchmark to set one group's `self_ensemble`)."""
        return self._fusion

    def __call__(self, b10, b20, b60, *, generators):
        device = self.options.device
        b10, b20, b60 = (x.to(device) for x in (b10, b20, b60))
        generators = list(generators)
        on_cpu = torch.device(device).type == "cpu"
        if on_cpu and b10.shape[0] == 1 and 3 * b10.shape[-2] * b10.shape[-1] <= ATEN_SMALL_CONV:
            # a batch of two (the tile and a copy with its own generator) gets the kernels of any larger batch
            pad = torch.Generator().manual_seed(0)
            return self._forward(*(torch.cat([x, x]) for x in (b10, b20, b60)), [*generators, pad])[:1]
        return self._forward(b10, b20, b60, generators)

    def _forward(self, b10, b20, b60, generators):
        """One forward pass of each network over the batch: (B,12,4H,4W) float32 on the CPU."""
        sr_rgb = self._sr.super_resolve(
            baselines.rgb_of(b10), steps=self.steps, generator=generators, precision=self.precision
        )
        return self._fusion.fuse(b10, b20, b60, sr_rgb, precision=self.precision).float().cpu()


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
