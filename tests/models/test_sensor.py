"""Wald sensor-model operator: constants, shapes, factor bookkeeping per band group."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.bands import BAND_GROUPS
from pipeline.models.sensor import (
    backproject,
    default_sigma,
    gaussian_blur,
    upsample,
    wald_degrade,
    wald_degrade_strided,
)


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 24])
@pytest.mark.parametrize("sigma", [None, 0.0, 3.0])
def test_boxcar_of_a_constant_is_the_constant(factor: int, sigma: float | None) -> None:
    x = torch.full((2, 3, 48, 72), 0.1234)
    y = wald_degrade(x, factor, sigma=sigma)
    assert y.shape == (2, 3, 48 // factor, 72 // factor)
    torch.testing.assert_close(y, torch.full_like(y, 0.1234))


def test_boxcar_without_blur_is_the_block_mean() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 8, 12, generator=g)
    y = wald_degrade(x, 4, sigma=0.0)
    torch.testing.assert_close(y[0, 1, 1, 2], x[0, 1, 4:8, 8:12].mean())


def test_remainder_rows_are_dropped() -> None:
    assert wald_degrade(torch.zeros(1, 1, 50, 47), 8).shape == (1, 1, 6, 5)


def test_factor_bookkeeping_per_group() -> None:
    # Wald training of group g: every band degraded by g's factor to 2.5 m, upsampled back by the same
    # factor onto g's native grid; the guide is the native 10 m RGB degraded to g's grid.
    factors = {g.name: g.factor_to_target for g in BAND_GROUPS}
    assert factors == {"10m": 4, "20m": 8, "60m": 24}
    h10 = 288  # divisible by 6 * 24: every group grid divides by its factor
    for g in BAND_GROUPS:
        n = h10 // g.factor_to_10m
        native = torch.zeros(1, len(g.bands), n, n)
        lr = wald_degrade(native, g.factor_to_target)
        assert lr.shape[-1] == n // g.factor_to_target
        assert upsample(lr, g.factor_to_target).shape[-1] == n
        guide = wald_degrade(torch.zeros(1, 3, h10, h10), g.factor_to_10m)
        assert guide.shape[-1] == n


def test_default_sigma_gives_target_mtf() -> None:
    for factor in (4, 8, 24):
        s = default_sigma(factor)
        gauss = math.exp(-2 * math.pi**2 * s**2 / (2 * factor) ** 2)
        assert abs(gauss * 2 / math.pi - 0.3) < 1e-9
    assert default_sigma(1) == 0.0


def test_blur_preserves_mean_and_shape() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 64, 64, generator=g)
    y = gaussian_blur(x, 2.0)
    assert y.shape == x.shape
    assert abs(float(y.mean() - x.mean())) < 0.01


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_upsample_shape_and_constant(mode: str) -> None:
    y = upsample(torch.full((1, 2, 5, 7), 0.5), 6, mode=mode)
    assert y.shape == (1, 2, 30, 42)
    torch.testing.assert_close(y, torch.full_like(y, 0.5))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        wald_degrade(torch.zeros(3, 8, 8), 2)
    with pytest.raises(ValueError, match="mode"):
        upsample(torch.zeros(1, 1, 2, 2), 2, mode="nearest")


@pytest.mark.parametrize("factor", [4, 8, 24])
def test_backprojection_converges_onto_the_measurement(factor: int) -> None:
    # White noise is the worst case (most energy near Nyquist, where the sensor passes least).
    lr = torch.rand(1, 2, 12, 12, generator=torch.Generator().manual_seed(factor))
    x = upsample(lr, factor)
    errs = [
        float((wald_degrade(backproject(x, lr, factor, iterations=n), factor) - lr).abs().mean())
        for n in (0, 5, 50)
    ]
    assert errs[1] < 0.3 * errs[0] and errs[2] < 1e-3


def test_backprojection_keeps_consistent_images_and_constants() -> None:
    lr = torch.full((1, 3, 6, 6), 0.2)
    flat = torch.full((1, 3, 24, 24), 0.2)
    torch.testing.assert_close(backproject(flat, lr, 4, iterations=5), flat)
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    assert backproject(x, lr[:, :1], 4, iterations=0) is x
    with pytest.raises(ValueError, match="is not lr"):
        backproject(x, lr[:, :1], 8, iterations=1)


def test_sr_low_frequency_consistency_is_the_sensor_back_projection() -> None:
    """The SR's low-frequency consistency is `backproject` with the one sensor model (real patch)."""
    from pathlib import Path

    from pipeline.io.scene_files import read_scene
    from pipeline.models.diffusion import load_sr_model
    from pipeline.models.diffusion.model import LOWFREQ_ITERATIONS

    heldout = Path(__file__).resolve().parents[2] / "data" / "samples" / "heldout"
    scene = read_scene(heldout / "S2A_MSIL2A_20170617T113321_4_55")
    rgb = torch.from_numpy(scene.b10[[2, 1, 0], :24, :24]).float()[None]  # B04, B03, B02
    model = load_sr_model()
    raw, out = (
        model.super_resolve(rgb, steps=2, generator=torch.Generator().manual_seed(3), lowfreq_consistency=lfc)
        for lfc in (False, True)
    )
    assert torch.equal(out, backproject(raw, rgb, 4, iterations=LOWFREQ_ITERATIONS))
    err_raw, err_out = (float((wald_degrade(x, 4) - rgb).abs().mean()) for x in (raw, out))
    assert err_out < 0.3 * err_raw


@pytest.mark.parametrize(("factor", "size"), [(4, (480, 480)), (8, (103, 97)), (24, (480, 456)), (2, (5, 7))])
def test_the_strided_degrade_is_the_same_operator(factor, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(factor))
    a, b = wald_degrade(x, factor), wald_degrade_strided(x, factor)
    assert a.shape == b.shape
    assert (a - b).abs().max() < 2e-6  # another summation order, nothing else
