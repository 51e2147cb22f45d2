"""Wald training pairs and the scene reader on the bundled real scenes (data/samples, not /work/shared)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pipeline.errors import AssetError, TrainingDataError
from pipeline.models.fusion import preset_configs
from pipeline.models.sensor import upsample
from pipeline.train.fusion import WaldSampler, _crop_to, lr_factor
from pipeline.train.scenes import read_training_scene
from pipeline.train.wald import make_wald_pair, min_scene_size_10m, sample_crops

REPO = Path(__file__).resolve().parents[2]
AUSTRIA = REPO / "data/samples/catalog/S2A_MSIL2A_20170613T101031_87_48"  # a training scene of SPLIT.md
SAHARA = REPO / "data/samples/scenes/western_sahara_29rkh_100m_crop"  # 100/200/600 m, ratios kept


@pytest.fixture(scope="module")
def scene() -> dict[str, torch.Tensor]:
    return read_training_scene(AUSTRIA)


def test_read_scene_gives_nested_grids_in_reflectance(scene: dict[str, torch.Tensor]) -> None:
    assert scene["B02"].shape == (1, 1, 120, 120)
    assert scene["B05"].shape == (1, 1, 60, 60) and scene["B01"].shape == (1, 1, 20, 20)
    assert 0.0 < float(scene["B08"].mean()) < 1.0


def test_read_scene_names_the_missing_band(tmp_path: Path) -> None:
    shutil.copytree(AUSTRIA, tmp_path / "scene")
    (tmp_path / "scene" / "B01.tif").unlink()
    with pytest.raises(AssetError, match="no GeoTIFF for band B01"):
        read_training_scene(tmp_path / "scene")


@pytest.mark.parametrize("group,side", [("10m", 120), ("20m", 56)])
def test_wald_pair_shapes_per_group(scene: dict[str, torch.Tensor], group: str, side: int) -> None:
    cfg = preset_configs("small")[group]
    cropped = _crop_to(scene, min_scene_size_10m(cfg))  # x8 for 20m: 10 m side 112, group grid 56
    pair = make_wald_pair(cropped, cfg, generator=torch.Generator().manual_seed(0))
    n_in, n_out = len(cfg.input_bands), len(cfg.output_bands)
    assert pair.ms_up.shape == (1, n_in, side, side)
    assert pair.guide.shape == (1, 3, side, side) and pair.target.shape == (1, n_out, side, side)
    assert pair.lr.shape == (1, n_out, side // cfg.factor, side // cfg.factor)
    # the upsampled degraded own bands stay close to the target (same bands, coarser)
    assert float((pair.ms_up[:, -n_out:] - pair.target).abs().mean()) < 0.5


def test_min_scene_size_per_group() -> None:
    cfgs = preset_configs("small")
    assert {k: min_scene_size_10m(c) for k, c in cfgs.items()} == {"10m": 4, "20m": 16, "60m": 144}


def test_crops_are_seeded(scene: dict[str, torch.Tensor]) -> None:
    cfg = preset_configs("small")["10m"]
    pair = make_wald_pair(scene, cfg, generator=torch.Generator().manual_seed(0))
    a = sample_crops(pair, 24, 3, generator=torch.Generator().manual_seed(5))
    b = sample_crops(pair, 24, 3, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (3, 4, 24, 24) and a[2].shape == (3, 4, 24, 24)


def test_crops_carry_the_measured_bands_under_them(scene: dict[str, torch.Tensor]) -> None:
    """The LR crop is the one the upsampled input was made from, turned and flipped with it."""
    cfg = preset_configs("small")["10m"]
    pair = make_wald_pair(scene, cfg, generator=torch.Generator().manual_seed(0))
    for seed in range(6):
        ms, _, _, lr = sample_crops(
            pair, 24, 2, generator=torch.Generator().manual_seed(seed), align=cfg.factor
        )
        assert lr.shape == (2, 4, 6, 6)
        # bilinear upsampling of the LR crop reproduces the ms_up crop away from the crop edge
        up = upsample(lr, cfg.factor)
        torch.testing.assert_close(up[..., 4:-4, 4:-4], ms[:, -4:, 4:-4, 4:-4], atol=1e-5, rtol=0)
    unaligned = sample_crops(pair, 24, 1, generator=torch.Generator().manual_seed(0), align=1)[3]
    assert unaligned.shape[-2:] == (0, 0)


def test_sampler_refuses_a_group_without_a_large_enough_scene() -> None:
    scenes = {"sahara": read_training_scene(SAHARA)}
    with pytest.raises(TrainingDataError, match="60m group"):
        WaldSampler(scenes, preset_configs("small"), 24, torch.Generator().manual_seed(0))
    cfgs = {k: v for k, v in preset_configs("small").items() if k != "60m"}
    s = WaldSampler(scenes, cfgs, 24, torch.Generator().manual_seed(0))
    ms, gd, tgt, lr = s.batch("20m", 2)
    assert ms.shape == (2, 10, 24, 24) and gd.shape == (2, 3, 24, 24) and tgt.shape == (2, 6, 24, 24)
    assert lr.shape == (2, 6, 3, 3)  # the measured 20 m bands under each crop (x8 coarser)


def test_lr_schedule_warms_up_and_decays() -> None:
    assert (
        lr_factor(0, 1000) < 0.05 and lr_factor(60, 1000) > 0.95 and abs(lr_factor(1000, 1000) - 0.05) < 1e-9
    )
