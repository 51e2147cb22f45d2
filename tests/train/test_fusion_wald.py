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
from pipeline.train.wald import (
    make_wald_pair,
    make_wald_x4_pair,
    min_scene_size_10m,
    min_scene_size_10m_x4,
    sample_crops,
    wald_l1_loss,
)

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
        ms, _, _, lr, _ = sample_crops(
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
    ms, gd, tgt, lr, box = s.batch("20m", 2)
    assert ms.shape == (2, 10, 24, 24) and gd.shape == (2, 3, 24, 24) and tgt.shape == (2, 6, 24, 24)
    assert lr.shape == (2, 6, 3, 3)  # the measured 20 m bands under each crop (x8 coarser)
    assert box.tolist() == [1, 1]  # targets on the output grid


def test_x4_pair_is_the_wald_x4_evaluation_geometry(scene: dict[str, torch.Tensor]) -> None:
    """A 1.2 km patch (too small for the 60 m x24 pair) gives a 60 m x4 pair: inputs degraded by 4 on the 10 m
    grid, the measured 60 m bands at 240 m, the native 60 m bands as 6 x 6 blocks."""
    from pipeline.models.fusion.normalise import normalise
    from pipeline.models.sensor import wald_degrade

    cfg = preset_configs("small")["60m"]
    assert min_scene_size_10m(cfg) == 144 and min_scene_size_10m_x4(cfg) == 24
    pair = make_wald_x4_pair(scene, cfg, generator=torch.Generator().manual_seed(0), random_blur=False)
    assert pair.ms_up.shape == (1, 12, 120, 120) and pair.guide.shape == (1, 3, 120, 120)
    assert pair.lr.shape == (1, 2, 5, 5) and pair.factor == 24 and pair.target_box == 6
    native = normalise(torch.cat([scene["B01"], scene["B09"]], 1), ("B01", "B09"))
    torch.testing.assert_close(pair.target[..., ::6, ::6], native)
    torch.testing.assert_close(pair.target[..., 5::6, 5::6], native)
    torch.testing.assert_close(pair.lr, wald_degrade(native, 4), atol=1e-5, rtol=0)
    # every input band went through the same x4 sensor step: B04 (10 m) is its degraded self upsampled x4
    b04 = normalise(upsample(wald_degrade(scene["B04"], 4), 4), ("B04",))
    torch.testing.assert_close(pair.ms_up[:, 2:3], b04, atol=1e-5, rtol=0)


def test_x4_loss_scores_the_prediction_as_the_evaluation_does(scene: dict[str, torch.Tensor]) -> None:
    """The loss of an x4 crop is the L1 between the prediction degraded x6 by the evaluation's own operator
    (pipeline.eval.resample.degrade, NaN-aware numpy) and the native 60 m pixels; a blocky prediction that
    copies the target is not free, and a smooth one close to the truth scores better than a biased one."""
    from pipeline.eval.resample import degrade

    cfg = preset_configs("small")["60m"]
    pair = make_wald_x4_pair(scene, cfg, generator=torch.Generator().manual_seed(0))
    crops = sample_crops(pair, 48, 3, generator=torch.Generator().manual_seed(1), align=24)
    assert crops.box.tolist() == [6, 6, 6] and crops.target.shape == (3, 2, 48, 48)
    pred = crops.target + 0.1 * torch.randn(crops.target.shape, generator=torch.Generator().manual_seed(2))
    want = (
        sum(
            float(abs(degrade(pred[i].numpy(), 6) - crops.target[i, :, ::6, ::6].numpy()).mean())
            for i in range(3)
        )
        / 3
    )
    assert abs(float(wald_l1_loss(pred, crops)) - want) < 1e-5
    assert float(wald_l1_loss(crops.target + 0.5, crops)) > float(wald_l1_loss(crops.target, crops)) + 0.4
    # a batch of plain crops keeps the plain L1 mean
    plain = sample_crops(
        make_wald_pair(scene, preset_configs("small")["10m"], generator=torch.Generator()),
        24,
        2,
        generator=torch.Generator(),
    )
    p2 = plain.target + 0.3
    torch.testing.assert_close(wald_l1_loss(p2, plain), (p2 - plain.target).abs().mean())
    with pytest.raises(ValueError, match="aligned to its blocks"):
        sample_crops(pair, 48, 1, generator=torch.Generator(), align=1)


def test_sampler_trains_the_60m_group_on_patches_with_x4_pairs(scene: dict[str, torch.Tensor]) -> None:
    """Without x4 pairs a 1.2 km patch cannot train the 60 m net; with them it can, and a scene that fits
    both kinds gives each with the asked probability."""
    cfg = {"60m": preset_configs("small")["60m"]}
    with pytest.raises(TrainingDataError, match="60m group"):
        WaldSampler({"patch": scene}, cfg, 24, torch.Generator().manual_seed(0))
    s = WaldSampler({"patch": scene}, cfg, 24, torch.Generator().manual_seed(0), x4_groups=("60m",))
    ms, gd, tgt, lr, box = s.batch("60m", 4)
    assert (
        ms.shape == (4, 12, 24, 24)
        and gd.shape == (4, 3, 24, 24)
        and tgt.shape == (4, 2, 24, 24)
        and lr.shape == (4, 2, 1, 1)
    )
    assert box.tolist() == [6, 6, 6, 6]
    big = {b: t.repeat(1, 1, 2, 2) for b, t in scene.items()}  # 240 px: fits one x24 block of 144
    for prob, want in ((0.0, {1}), (1.0, {6}), (0.5, {1, 6})):
        s = WaldSampler(
            {"big": big}, cfg, 24, torch.Generator().manual_seed(0), x4_groups=("60m",), x4_prob=prob
        )
        assert set(s.batch("60m", 16).box.tolist()) == want


def test_lr_schedule_warms_up_and_decays() -> None:
    assert (
        lr_factor(0, 1000) < 0.05 and lr_factor(60, 1000) > 0.95 and abs(lr_factor(1000, 1000) - 0.05) < 1e-9
    )
