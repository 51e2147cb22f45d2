"""Degradation operators: kernels normalised, seeded reproducibility, noise level, shapes."""

from __future__ import annotations

import math

import torch

from pipeline.models.degradation import (
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


def test_kernels_sum_to_one_and_are_21x21():
    k = isotropic_gaussian_kernel(2.5)
    assert k.shape == (21, 21)
    assert abs(float(k.sum()) - 1) < 1e-5
    ka = anisotropic_gaussian_kernel(
        torch.tensor([0.2, 4.0]), torch.tensor([4.0, 1.0]), torch.tensor([0.3, math.pi])
    )
    assert ka.shape == (2, 21, 21)
    assert torch.allclose(ka.sum((1, 2)), torch.ones(2), atol=1e-5)


def test_anisotropic_kernel_rotation_by_half_turn_is_identity_and_quarter_turn_transposes():
    k0 = anisotropic_gaussian_kernel(1.0, 3.0, 0.0)[0]
    assert torch.allclose(k0, anisotropic_gaussian_kernel(1.0, 3.0, math.pi)[0], atol=1e-6)
    assert torch.allclose(k0.T, anisotropic_gaussian_kernel(1.0, 3.0, math.pi / 2)[0], atol=1e-6)


def test_sampled_degradation_is_reproducible_with_a_seeded_generator_and_in_range():
    r = DegradationRanges()
    a = sample_degradation(4, r, torch.Generator().manual_seed(3))
    b = sample_degradation(4, r, torch.Generator().manual_seed(3))
    assert torch.equal(a.kernels, b.kernels) and torch.equal(a.noise_sigma, b.noise_sigma)
    assert (a.noise_sigma >= 0).all() and (a.noise_sigma <= 25 / 255).all()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y1 = degrade(x, a, torch.Generator().manual_seed(5))
    y2 = degrade(x, a, torch.Generator().manual_seed(5))
    assert y1.shape == (4, 3, 8, 8) and torch.equal(y1, y2)


def test_noise_has_the_requested_standard_deviation():
    x = torch.zeros(1, 3, 128, 128)
    y = add_gaussian_noise(x, 0.05, torch.Generator().manual_seed(0))
    assert abs(float(y.std()) - 0.05) < 0.002


def test_blur_preserves_a_constant_image_and_bicubic_quarters_the_size():
    x = torch.full((2, 3, 40, 40), 0.3)
    assert torch.allclose(blur(x, isotropic_gaussian_kernel(3.0)), x, atol=1e-6)
    assert bicubic_downsample(x).shape == (2, 3, 10, 10)


def test_power_law_harmonisation_matches_equation_9():
    x = torch.full((1, 3, 2, 2), 100.0)
    y = harmonize_power_law(x, (0.5, 1.0, 2.0), k=255.0)
    expected = [(100 / 255) ** 2 * 255, 100.0, (100 / 255) ** 0.5 * 255]
    assert torch.allclose(y[0, :, 0, 0], torch.tensor(expected), rtol=1e-5)
