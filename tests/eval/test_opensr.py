"""OpenSR-test scores: hand-computed correctness, registration, and golden numbers of opensr-test 1.3.3."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.errors import ConfigError
from pipeline.eval import opensr as O
from pipeline.eval.resample import degrade
from pipeline.io.scene_files import read_scene

HELDOUT = (
    Path(__file__).resolve().parents[2] / "data" / "samples" / "heldout" / "S2A_MSIL2A_20170617T113321_4_55"
)


@pytest.fixture(scope="module")
def triplet():
    """Real held-out 10 m bands (HR), their x4 sensor-model degradation (LR), and its bicubic upsampling
    (SR)."""
    hr = read_scene(HELDOUT).b10
    lr = degrade(hr, 4)
    sr = torch.nn.functional.interpolate(
        torch.from_numpy(lr)[None], scale_factor=4, mode="bicubic", align_corners=False
    )[0].numpy()
    return lr, sr, hr


def test_nd_l1_sad_maps_by_hand():
    x = np.array([[[0.1]], [[0.3]]])
    y = np.array([[[0.3]], [[0.3]]])
    assert O.nd_map(x, y)[0, 0] == pytest.approx((0.2 / 0.4 + 0.0) / 2)
    assert O.l1_map(x, y)[0, 0] == pytest.approx(0.1)
    # angle between (1, 3) and (1, 1)
    expected = math.degrees(math.acos(4 / (math.sqrt(10) * math.sqrt(2))))
    assert O.sad_map(x, y)[0, 0] == pytest.approx(expected)


def test_correctness_formulas_by_hand():
    cfg = O.OpenSRConfig()
    # 4 pixels; d_ref = 1 everywhere so a = d_im, b = d_om; threshold = 3rd smallest d_ref = 1
    d_ref = np.ones((2, 2))
    d_im = np.array([[2.0, 0.5], [0.5, 1.0]])
    d_om = np.array([[0.5, 2.0], [0.5, 1.0]])
    res = O.correctness_scores(d_ref, d_im, d_om, cfg)
    # kept: d_im or d_om > 1 -> pixels (0,0) and (0,1) only
    assert np.isnan(res.maps["improvement"][1]).all()
    a, b = 2.0, 0.5
    h = a + b - 1
    im = a + b * (1 - math.exp(-h * 0.05))
    om = b + a * (1 - math.exp(-h * 0.05))
    ha = math.exp(-a * b * 0.05)
    z = np.exp(-np.array([im, om, ha]) / 0.25)
    p = z / z.sum()
    assert res.maps["improvement"][0, 0] == pytest.approx(p[0])
    assert res.maps["omission"][0, 0] == pytest.approx(p[1])
    assert res.maps["hallucination"][0, 0] == pytest.approx(p[2])
    # pixel (0,1) is the mirror image: improvement and omission swap
    assert res.maps["omission"][0, 1] == pytest.approx(p[0])
    assert res.improvement + res.omission + res.hallucination == pytest.approx(1.0)


def test_phase_correlation_recovers_a_known_shift_of_a_real_band(triplet):
    _, _, hr = triplet
    band = hr[3].astype(np.float64)
    moved = np.real(np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(band), (-2.0, 3.0))))
    shift = O.phase_correlation_shift(band, moved)
    np.testing.assert_allclose(shift, [2.0, -3.0], atol=0.03)


def test_histogram_match_takes_the_reference_distribution(triplet):
    _, sr, hr = triplet
    matched = O.histogram_match(sr * 1.7 + 0.05, hr)
    for b in range(hr.shape[0]):
        # same distribution (up to interpolation between tied reference values) ...
        q = np.linspace(1, 99, 21)
        np.testing.assert_allclose(np.percentile(matched[b], q), np.percentile(hr[b], q), atol=2e-4)
        # ... and the SR's pixel ranking is kept
        order = np.argsort(sr[b].ravel(), kind="stable")
        assert np.all(np.diff(matched[b].ravel()[order]) >= 0)


def test_consistency_of_an_exact_inverse_is_zero(triplet):
    lr, _, hr = triplet
    # hr degraded by the sensor model is lr, so hr is a perfectly consistent "SR" of lr
    res = O.consistency(
        lr, hr, 4, cfg=O.OpenSRConfig(border_px=0)
    )  # a crop would change the blur at the edges
    assert res["reflectance_l1"] == pytest.approx(0.0, abs=1e-7)
    assert res["spectral_sad_deg"] == pytest.approx(0.0, abs=0.02)
    assert res["spatial_shift_px"] == pytest.approx(0.0, abs=1e-9)


# Golden numbers: opensr-test 1.3.3 `Metrics(device="cpu").compute(lr, sr, hr)` (default Config) on the
# tensors of the `triplet` fixture (and SR shifted by (1.5, -1) px with scipy bilinear shift).
GOLDEN = {
    "bicubic": {
        "reflectance": 0.0023309539537876844,
        "spectral": 0.38672977685928345,
        "spatial": 0.0,
        "synthesis": 0.006138318218290806,
        "ha": 0.14662064611911774,
        "om": 0.6699886322021484,
        "im": 0.18339072167873383,
    },
    "shifted": {
        "reflectance": 0.005546310916543007,
        "spectral": 0.889718770980835,
        "spatial": 0.3130495250225067,
        "synthesis": 0.008444358594715595,
        "ha": 0.342136949300766,
        "om": 0.4605148732662201,
        "im": 0.19734816253185272,
    },
}


@pytest.mark.parametrize("case", ["bicubic", "shifted"])
def test_scores_reproduce_opensr_test_1_3_3(triplet, case):
    lr, sr, hr = triplet
    if case == "shifted":
        sr = np.stack([ndimage.shift(b, (1.5, -1.0), order=1, mode="nearest") for b in sr]).astype(np.float32)
    cfg = O.OpenSRConfig(downsampling="bilinear")  # OpenSR-test's own degrade-back
    g = GOLDEN[case]
    cons = O.consistency(lr, sr, 4, cfg=cfg)
    corr = O.correctness(lr, sr, hr, 4, cfg=cfg)
    assert cons["reflectance_l1"] == pytest.approx(g["reflectance"], rel=1e-4)
    assert cons["spectral_sad_deg"] == pytest.approx(g["spectral"], rel=1e-4)
    assert cons["spatial_shift_px"] == pytest.approx(g["spatial"], abs=1e-4)
    assert O.synthesis(lr, sr, 4, hr=hr, cfg=cfg) == pytest.approx(g["synthesis"], rel=1e-4)
    assert corr.hallucination == pytest.approx(g["ha"], rel=1e-4)
    assert corr.omission == pytest.approx(g["om"], rel=1e-4)
    assert corr.improvement == pytest.approx(g["im"], rel=1e-4)


def test_invalid_config_is_rejected():
    with pytest.raises(ConfigError, match="downsampling"):
        O.OpenSRConfig(downsampling="lanczos")
