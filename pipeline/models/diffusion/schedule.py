"""Cosine noise schedule (T = 1000, s = 0.008) and a DDIM sampler kept apart from the network.

The sampler follows the diffusers scheduler contract: `set_timesteps(n)` fixes the (t, t_prev)
pairs, `step(x0_pred, i, x_t, generator=...)` returns x_{t_prev}; the network is called by the
caller with `noise_level(i)` = sqrt(alpha_bar_t) (the reference's continuous encoding).
It reproduces the reference's DDIM exactly: skip = T // n, pairs (950,900) ... (50,0), (0,0) for
n = 20, x0 clamped to [-1, 1], eps recomputed from x0 with the float32 buffers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class CosineSchedule:
    """Buffers of the cosine schedule (Nichol & Dhariwal), float64 maths, float32 storage.

    Attributes:
        betas, alphas, alphas_cumprod, alphas_cumprod_prev, sqrt_alphas_cumprod,
        sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod: (T,) float32 tensors named as in
        the reference `Diffusion` buffers.
        sqrt_alphas_cumprod_prev_ext: (T+1,) sqrt of [1, alpha_bar_1 .. alpha_bar_T] (training levels).
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod_prev_ext: torch.Tensor

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @classmethod
    def cosine(cls, timesteps: int = 1000, s: float = 0.008) -> CosineSchedule:
        t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s
        f = torch.cos(t / (1 + s) * math.pi / 2).pow(2)
        f = f / f[0]
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        f32 = lambda a: a.to(torch.float32)
        return cls(
            betas=f32(betas),
            alphas=f32(alphas),
            alphas_cumprod=f32(ac),
            alphas_cumprod_prev=f32(ac_prev),
            sqrt_alphas_cumprod=f32(ac.sqrt()),
            sqrt_recip_alphas_cumprod=f32((1.0 / ac).sqrt()),
            sqrt_recipm1_alphas_cumprod=f32((1.0 / ac - 1).sqrt()),
            sqrt_alphas_cumprod_prev_ext=f32(torch.cat([torch.ones(1, dtype=torch.float64), ac]).sqrt()),
        )

    def training_levels(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Continuous training noise levels (SR3/WaveGrad style).

        level = sqrt ab_t + u (sqrt ab_{t-1} - sqrt ab_t).

        Args:
            t: (B,) int64 timesteps in 1..T (drawn uniformly by the caller).
            u: (B,) float32 in [0, 1) (uniform).

        Returns (B,) float32 in (0, 1] (t = 1 levels round to 1 in float32).
        """
        lo, hi = self.sqrt_alphas_cumprod_prev_ext[t], self.sqrt_alphas_cumprod_prev_ext[t - 1]
        return lo + (hi - lo) * u


class DDIMSampler:
    """DDIM over a `CosineSchedule` (eta = 0: deterministic given x_T).

    Usage::

        sampler = DDIMSampler(CosineSchedule.cosine(1000))
        sampler.set_timesteps(20)
        x = sampler.initial_noise((B, 3, H, W), generator)
        for i in range(len(sampler)):
            x0 = net(x, sampler.noise_level(i, B), ...)
            x = sampler.step(x0, i, x, generator=generator, eta=0.0)
    """

    def __init__(self, schedule: CosineSchedule) -> None:
        self.schedule = schedule
        self.pairs: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def set_timesteps(self, num_inference_steps: int) -> list[tuple[int, int]]:
        """Fix the (t, t_prev) pairs: skip = T // n, seq = 0, skip, ..., reversed, t_prev = previous."""
        T = self.schedule.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
            raise ConfigError(
                f"DDIM steps must be an integer in 1..{T} (the training timesteps T), got "
                f"{num_inference_steps!r}; pass e.g. --steps 20"
            )
        skip = T // num_inference_steps
        seq = list(range(0, T, skip))
        seq_next = [0] + seq[:-1]
        self.pairs = list(zip(reversed(seq), reversed(seq_next)))
        return self.pairs

    @staticmethod
    def initial_noise(
        shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """x_T ~ N(0, I), drawn on the generator's device then moved (float32)."""
        return torch.randn(shape, generator=generator, device=generator.device).to(device)

    def noise_level(self, i: int, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B,) level fed to the network at call i: sqrt(alpha_bar_t)."""
        t = self.pairs[i][0]
        return self.schedule.sqrt_alphas_cumprod[t].repeat(batch).to(device)

    def step(
        self,
        x0_pred: torch.Tensor,
        i: int,
        x_t: torch.Tensor,
        *,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """One DDIM update x_t -> x_{t_prev} (Song et al. eq. 12) from the network's x0 prediction.

        Args:
            x0_pred: (B, C, H, W) network output (clamped here to [-1, 1]).
            i: index into the pairs set by `set_timesteps`.
            x_t: (B, C, H, W) current sample.
            generator: needed when eta > 0 (fresh noise); one, or one per sample (see `draw_noise`).
            eta: 0 = deterministic DDIM, 1 = DDPM-like ancestral variance.
        """
        if not self.pairs:
            raise ConfigError("call set_timesteps(n) before step()")
        t, t_prev = self.pairs[i]
        s = self.schedule
        dev = x_t.device
        ab_t = s.alphas_cumprod[t].to(dev)
        ab_prev = s.alphas_cumprod[t_prev].to(dev)
        x0 = x0_pred.clamp(-1.0, 1.0)
        eps = (x_t * s.sqrt_recip_alphas_cumprod[t].to(dev) - x0) / s.sqrt_recipm1_alphas_cumprod[t].to(dev)
        sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).clamp_min(0).sqrt()
        x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
        if eta > 0 and float(sigma) > 0:
            if generator is None:
                raise ConfigError("eta > 0 draws noise: pass an explicit torch.Generator")
            x_prev = x_prev + sigma * draw_noise(tuple(x_t.shape), generator, dev)
        return x_prev


def draw_noise(
    shape: tuple[int, ...],
    generator: torch.Generator | Sequence[torch.Generator],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, ...) standard normal noise from one generator (one draw of `shape`), or from B generators: sample i
    drawn as (1, ...) from generator i, so that it equals the noise that sample gets in a batch of one."""
    if isinstance(generator, torch.Generator):
        return DDIMSampler.initial_noise(shape, generator, device)
    if len(generator) != shape[0]:
        raise ConfigError(f"{len(generator)} generators for a batch of {shape[0]}; pass one per sample")
    return torch.cat([DDIMSampler.initial_noise((1, *shape[1:]), g, device) for g in generator])
