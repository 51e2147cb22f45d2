"""Held-out Wald x4 fidelity of the SR model (pipeline.eval.sr_wald), scored by pipeline.eval.metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import AssetError
from pipeline.eval import metrics
from pipeline.eval.sr_wald import FACTOR, evaluate, load_rgb
from pipeline.models.diffusion import load_sr_model
from pipeline.models.sensor import wald_degrade
from tests.conftest import HELDOUT

SCENE = HELDOUT / "S2B_MSIL2A_20170924T93020_69_24"


def test_rows_are_the_shared_metrics_with_the_references_peak() -> None:
    torch.set_num_threads(1)
    (row,) = evaluate(load_sr_model(None), [SCENE], steps=2, lowfreq_consistency=True).values()
    ref = load_rgb(SCENE)
    lr = wald_degrade(ref, FACTOR)
    bic = F.interpolate(lr, scale_factor=FACTOR, mode="bicubic", align_corners=False)
    r, b = ref[0].double().numpy(), bic[0].double().numpy()
    assert row["bicubic_psnr"] == round(metrics.psnr(b, r, data_range=float(r.max())), 3)
    span = float(r.max() - r.min())
    assert row["bicubic_ssim"] == round(
        float(np.mean([metrics.ssim(x, y, data_range=span) for x, y in zip(b, r)])), 4
    )
    # the back-projection makes bicubic consistent with its input, and the SR with it is too
    assert row["bicubic_bp_l1_consistency"] < row["bicubic_l1_consistency"] / 3
    assert row["sr_sam_consistency_deg"] < row["bicubic_sam_consistency_deg"]


def test_a_folder_without_rgb_bands_is_an_asset_error(tmp_path) -> None:
    with pytest.raises(AssetError, match="no GeoTIFF for band B04"):
        load_rgb(tmp_path)
