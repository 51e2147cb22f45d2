"""DDIM sampler contract: steps <= T, explicit generator, batch > 1 equals batch 1 on the same noise."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models.diffusion import CosineSchedule, DDIMSampler


def _toy_x0(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x * level.view(-1, 1, 1, 1))


def _run(sampler: DDIMSampler, x: torch.Tensor, gen: torch.Generator, eta: float) -> torch.Tensor:
    for i in range(len(sampler)):
        x = sampler.step(_toy_x0(x, sampler.noise_level(i, x.shape[0])), i, x, generator=gen, eta=eta)
    return x


@pytest.mark.parametrize("n", [1, 7, 20, 1000])
def test_any_number_of_steps_up_to_T(n):
    s = DDIMSampler(CosineSchedule.cosine(1000))
    pairs = s.set_timesteps(n)
    assert len(pairs) == len(range(0, 1000, 1000 // n)) and pairs[-1] == (0, 0)
    assert all(t >= tp for t, tp in pairs)


def test_steps_above_T_or_zero_are_rejected():
    s = DDIMSampler(CosineSchedule.cosine(1000))
    with pytest.raises(ConfigError, match="1..1000"):
        s.set_timesteps(1001)
    with pytest.raises(ConfigError, match="steps"):
        s.set_timesteps(0)


def test_batch_equals_single_samples_on_the_same_noise():
    s = DDIMSampler(CosineSchedule.cosine(1000))
    s.set_timesteps(10)
    x = DDIMSampler.initial_noise((3, 3, 8, 8), torch.Generator().manual_seed(0))
    batch = _run(s, x.clone(), torch.Generator().manual_seed(1), 0.0)
    for b in range(3):
        single = _run(s, x[b : b + 1].clone(), torch.Generator().manual_seed(1), 0.0)
        assert torch.allclose(batch[b : b + 1], single, atol=1e-6)


def test_eta_needs_an_explicit_generator_and_is_reproducible():
    s = DDIMSampler(CosineSchedule.cosine(1000))
    s.set_timesteps(5)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    a = _run(s, x.clone(), torch.Generator().manual_seed(2), 1.0)
    b = _run(s, x.clone(), torch.Generator().manual_seed(2), 1.0)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="Generator"):
        s.step(x, 0, x, generator=None, eta=1.0)


def test_training_levels_lie_between_the_neighbouring_discrete_levels():
    sched = CosineSchedule.cosine(1000)
    t = torch.tensor([1, 1, 500, 1000])
    u = torch.tensor([0.0, 0.999, 0.5, 0.0])
    lv = sched.training_levels(t, u)
    ext = sched.sqrt_alphas_cumprod_prev_ext
    assert torch.all(lv <= ext[t - 1]) and torch.all(lv >= ext[t])
    assert lv[0] == ext[1] and lv[1] > lv[0]  # u = 0 is sqrt ab_t; larger u is less noise
    assert 0.0 < float(lv.min()) and float(lv.max()) <= 1.0
