"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.eval import metrics as M

REF = np.array([[0.1, 0.2], [0.3, 0.4]])


def test_psnr_of_constant_offset_is_40_db():
    # MSE = 0.01^2 = 1e-4 -> 10 log10(1 / 1e-4) = 40 dB
    assert M.psnr(REF + 0.01, REF) == pytest.approx(40.0)
    assert M.psnr(REF + 0.01, REF, data_range=0.5) == pytest.approx(10 * math.log10(0.25 / 1e-4))


def test_psnr_of_perfect_prediction_is_infinite():
    assert M.psnr(REF, REF) == math.inf


def test_rmse_mae_mse_by_hand():
    pred = REF + np.array([[0.1, -0.1], [0.0, 0.0]])
    assert M.mse(pred, REF) == pytest.approx(0.005)  # (0.01 + 0.01) / 4
    assert M.rmse(pred, REF) == pytest.approx(math.sqrt(0.005))
    assert M.mae(pred, REF) == pytest.approx(0.05)


def test_nan_pixels_are_not_scored():
    pred = REF + 0.01
    pred[0, 0] = np.nan  # a nodata pixel in the prediction
    ref = REF.copy()
    ref[1, 1] = np.nan  # and one in the reference
    assert M.mse(pred, ref) == pytest.approx(1e-4)
    assert M.psnr(pred, ref) == pytest.approx(40.0)
    assert math.isnan(M.mse(np.full((2, 2), np.nan), REF))


def test_r2_by_hand():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.0, 2.0, 3.0, 5.0])
    # SS_res = 1, SS_tot = 1.25 + 0.25 + 0.25 + 2.25 = 5 -> 1 - 1/5
    assert M.r2(pred, ref) == pytest.approx(0.8)
    assert M.r2(ref.mean() * np.ones(4), ref) == pytest.approx(0.0)


def test_cross_correlation_of_affine_relations():
    ref = np.array([0.1, 0.5, 0.2, 0.9])
    assert M.cross_correlation(2 * ref + 1, ref) == pytest.approx(1.0)
    assert M.cross_correlation(-ref, ref) == pytest.approx(-1.0)
    assert math.isnan(M.cross_correlation(np.ones(4), ref))


def test_sam_is_45_degrees_between_orthogonal_and_diagonal_spectra():
    pred = np.zeros((2, 1, 2))
    ref = np.zeros((2, 1, 2))
    pred[:, 0, 0] = (1.0, 0.0)
    ref[:, 0, 0] = (1.0, 1.0)  # 45 degrees
    pred[:, 0, 1] = (0.2, 0.4)
    ref[:, 0, 1] = (0.1, 0.2)  # same direction, 0 degrees
    assert M.sam_deg(pred, ref) == pytest.approx(22.5)


def test_ergas_convention_by_hand():
    # band 0: mean 0.25, RMSE 0.025 -> 0.1 ; band 1: mean 0.5, RMSE 0.1 -> 0.2
    ref = np.stack([np.full((3, 3), 0.25), np.full((3, 3), 0.5)])
    pred = ref + np.stack([np.full((3, 3), 0.025), np.full((3, 3), -0.1)])
    expected = 100 / 4 * math.sqrt((0.1**2 + 0.2**2) / 2)  # h/l = 1/4
    assert M.ergas(pred, ref, ratio=4) == pytest.approx(expected)
    assert M.ergas(ref, ref, ratio=4) == 0.0


def test_ssim_of_constant_images_by_hand():
    a, b = 0.2, 0.3
    x = np.full((16, 16), a)
    y = np.full((16, 16), b)
    c1 = (0.01 * 1.0) ** 2
    # zero variance: the structure term is C2 / C2 = 1
    assert M.ssim(x, y) == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1))


def test_ssim_is_one_for_identical_images_and_nan_when_too_small():
    rng = np.random.default_rng(0)
    x = rng.random((20, 20))
    assert M.ssim(x, x) == pytest.approx(1.0)
    assert math.isnan(M.ssim(x[:8, :8], x[:8, :8]))  # no 11x11 window fits


def test_ssim_ignores_windows_touching_nodata():
    rng = np.random.default_rng(1)
    x = rng.random((30, 30))
    y = x.copy()
    y[0:3, 0:3] = 5.0  # wildly wrong pixels ...
    y_nan = y.copy()
    y_nan[0:3, 0:3] = np.nan  # ... declared nodata are not scored
    assert M.ssim(x, y_nan) == pytest.approx(1.0)
    assert M.ssim(x, y) < 1.0


def test_band_scores_has_every_metric():
    assert set(M.band_scores(REF + 0.01, REF)) == {"psnr", "ssim", "rmse", "mae", "r2", "cc"}


def test_ssim_matches_scikit_image_on_a_real_band():
    """Golden value: skimage 0.26 structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1) of the held-out Finland B08 against itself rolled by
    (1, -2) px."""
    from pathlib import Path

    from pipeline.io.scene_files import read_scene

    scene = read_scene(
        Path(__file__).resolve().parents[2] / "data/samples/heldout/S2B_MSIL2A_20170924T93020_69_24"
    )
    ref = scene.b10[3].astype(np.float64)
    pred = np.roll(ref, (1, -2), axis=(0, 1))
    assert M.ssim(pred, ref) == pytest.approx(0.5745565199147105, rel=1e-9)
