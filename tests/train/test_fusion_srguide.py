"""SR-aware training guides (--sr-guide) and the validation holdout (--holdout) of `train fusion`.

Bundled real scenes only (data/samples); the diffusion SR is replaced by a cheap stand-in (bilinear x4
plus a marker) except in one test that runs the shipped SR at 4 DDIM steps on a 30x30 input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.cli.train import fusion_parser
from pipeline.errors import ConfigError, TrainingDataError
from pipeline.models.fusion import preset_configs
from pipeline.models.sensor import upsample
from pipeline.train.fusion import (
    FusionTrainConfig,
    WaldSampler,
    _crop_to,
    holdout_cut,
    prepare_sr_guides,
)
from pipeline.train.scenes import read_training_scene
from pipeline.train.srguide import load_sr_guides, make_sr_guide, super_resolve_rgb
from pipeline.train.wald import make_wald_pair, min_scene_size_10m

REPO = Path(__file__).resolve().parents[2]
AUSTRIA = REPO / "data/samples/catalog/S2A_MSIL2A_20170613T101031_87_48"
MARK = 0.5  # the stand-in SR adds this, so its output is recognisable in the pairs


class FakeSR:
    """Stand-in for the diffusion SR: bilinear x4 + MARK; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def super_resolve(self, rgb: torch.Tensor, *, steps: int, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        assert min(rgb.shape[-2:]) >= 16
        return upsample(rgb, 4) + MARK


@pytest.fixture(scope="module")
def scene() -> dict[str, torch.Tensor]:
    return read_training_scene(AUSTRIA)


@pytest.mark.parametrize("group,side", [("10m", 120), ("20m", 56)])
def test_sr_guide_lands_on_the_group_grid_and_feeds_the_pair(scene, group: str, side: int) -> None:
    cfg = preset_configs("small")[group]
    sc = _crop_to(scene, min_scene_size_10m(cfg))
    g = make_sr_guide(sc, cfg, FakeSR(), steps=2, generator=torch.Generator().manual_seed(0))
    assert g.rgb_lr.shape == (1, 3, side // 4, side // 4) and g.sr.shape == (1, 3, side, side)
    assert all(0.18 <= m <= 0.45 for m in g.mtf)
    pair = make_wald_pair(sc, cfg, generator=torch.Generator().manual_seed(1), sr_guide=g)
    plain = make_wald_pair(sc, cfg, generator=torch.Generator().manual_seed(1))
    assert pair.guide.shape == plain.guide.shape == (1, 3, side, side)
    # guide = the SR (MARK reflectance above the native-derived guide), in normalised units
    from pipeline.bands import RGB_BANDS
    from pipeline.models.fusion.normalise import normalise

    assert torch.allclose(pair.guide, normalise(g.sr, RGB_BANDS), atol=1e-6)
    # R, G, B inputs are the SR's own degraded RGB, upsampled onto the group grid
    idx = [cfg.input_bands.index(b) for b in RGB_BANDS]
    up = upsample(g.rgb_lr, 4)  # factor f / the group's 10 m ratio = 4 for every group
    assert torch.allclose(pair.ms_up[:, idx], normalise(up, RGB_BANDS)[..., :side, :side], atol=1e-5)
    assert torch.equal(pair.target, plain.target)


def test_small_inputs_are_padded_for_the_sr() -> None:
    x = torch.rand(1, 3, 7, 9)
    out = super_resolve_rgb(FakeSR(), x, steps=1, seed=0)
    assert out.shape == (1, 3, 28, 36)
    assert torch.allclose(
        out, (upsample(torch.nn.functional.pad(x, [0, 7, 0, 9], mode="replicate"), 4) + MARK)[..., :28, :36]
    )


def test_shipped_sr_gives_a_plausible_guide(scene) -> None:
    from pipeline.models.diffusion import load_sr_model

    torch.manual_seed(0)
    cfg = preset_configs("small")["10m"]
    g = make_sr_guide(
        scene, cfg, load_sr_model(None, device="cpu"), steps=4, generator=torch.Generator().manual_seed(0)
    )
    native = torch.cat([scene[b] for b in ("B04", "B03", "B02")], 1)
    assert g.sr.shape == native.shape and torch.isfinite(g.sr).all()
    assert float((g.sr - native).abs().mean()) < 0.05  # close to the native RGB it was degraded from


def test_cache_is_written_once_and_reused(tmp_path: Path, scene) -> None:
    cfg = FusionTrainConfig(
        data=(str(AUSTRIA),),
        groups=("10m", "20m"),
        crop=16,
        sr_guide=str(tmp_path / "c"),
        sr_guide_draws=2,
        sr_guide_steps=1,
    )
    configs = {k: v for k, v in preset_configs("small").items() if k in cfg.groups}
    sr = FakeSR()
    a = prepare_sr_guides(cfg, {cfg.data[0]: scene}, configs, sr_model=sr, log=lambda m: None)
    assert sr.calls == 4 and len(list((tmp_path / "c").glob("*.pt"))) == 2
    b = prepare_sr_guides(cfg, {cfg.data[0]: scene}, configs, sr_model=sr, log=lambda m: None)
    assert sr.calls == 4  # cached
    assert torch.equal(a["20m"][cfg.data[0]][1].sr, b["20m"][cfg.data[0]][1].sr)
    assert a["10m"][cfg.data[0]][0].sr.shape == (1, 3, 120, 120)
    assert len(load_sr_guides(next((tmp_path / "c").glob("*.pt")))) == 2


def test_cache_goes_stale_when_the_sr_weights_change(tmp_path: Path, scene) -> None:
    """Guides cached for one set of SR weights are not reused for other weights at the same path."""
    import shutil

    weights = tmp_path / "sr"
    shutil.copytree(REPO / "pipeline/weights/sr_small", weights)
    cfg = FusionTrainConfig(
        data=(str(AUSTRIA),),
        groups=("10m",),
        crop=16,
        sr_guide=str(tmp_path / "c"),
        sr_guide_draws=1,
        sr_guide_steps=1,
        sr_weights=str(weights),
    )
    configs = {"10m": preset_configs("small")["10m"]}
    sr = FakeSR()
    prepare_sr_guides(cfg, {cfg.data[0]: scene}, configs, sr_model=sr, log=lambda m: None)
    prepare_sr_guides(cfg, {cfg.data[0]: scene}, configs, sr_model=sr, log=lambda m: None)
    assert sr.calls == 1
    (weights / "model.safetensors").write_bytes(
        (weights / "model.safetensors").read_bytes() + b" "
    )  # "retrained"
    prepare_sr_guides(cfg, {cfg.data[0]: scene}, configs, sr_model=sr, log=lambda m: None)
    assert sr.calls == 2 and len(list((tmp_path / "c").glob("*.pt"))) == 2


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_sampler_draws_sr_guided_crops_with_the_given_probability(tmp_path: Path, scene, prob: float) -> None:
    cfg = FusionTrainConfig(
        data=(str(AUSTRIA),), groups=("10m",), crop=16, sr_guide=str(tmp_path), sr_guide_draws=1
    )
    configs = {"10m": preset_configs("small")["10m"]}
    guides = prepare_sr_guides(cfg, {cfg.data[0]: scene}, configs, sr_model=FakeSR(), log=lambda m: None)
    s = WaldSampler(
        {cfg.data[0]: scene}, configs, 16, torch.Generator().manual_seed(0), sr_guides=guides, sr_prob=prob
    )
    _, guide, _, _, _ = s.batch("10m", 6)
    # the stand-in SR is MARK reflectance brighter: ~3 normalised units above the native guide
    from pipeline.bands import RGB_BANDS
    from pipeline.models.fusion.config import BAND_STD

    shift = MARK / BAND_STD[RGB_BANDS[0]]
    mean = float(guide[:, 0].mean())
    native = float(s.pairs["10m"][0].guide[:, 0].mean())
    assert (mean - native > 0.8 * shift) == (prob == 1.0)


def test_x4_pairs_take_the_10m_groups_sr_guide_cut_to_their_grid(tmp_path: Path, scene) -> None:
    """`--wald-x4 60m` with SR guides: the 60 m x4 pairs are guided by the 10 m group's SR draws, which
    cover a 132 px scene (a multiple of 4) where the x4 pair keeps 120 px (a multiple of 24): the guide is
    cut to it."""
    from pipeline.bands import NATIVE_GSD_M, RGB_BANDS
    from pipeline.models.fusion.normalise import normalise

    big = {
        b: t.repeat(1, 1, 2, 2)[..., : 132 // (NATIVE_GSD_M[b] // 10), : 132 // (NATIVE_GSD_M[b] // 10)]
        for b, t in scene.items()
    }
    cfg = FusionTrainConfig(
        data=(str(AUSTRIA),),
        groups=("60m",),
        wald_x4=("60m",),
        crop=48,
        sr_guide=str(tmp_path),
        sr_guide_draws=1,
    )
    configs = preset_configs("small")
    guides = prepare_sr_guides(cfg, {cfg.data[0]: big}, configs, sr_model=FakeSR(), log=lambda m: None)
    assert set(guides) == {"60m", "10m"} and guides["10m"][cfg.data[0]][0].sr.shape[-2:] == (132, 132)
    assert not guides["60m"]  # 132 px holds no x24 pair: the 60 m group trains on x4 pairs alone
    s = WaldSampler(
        {cfg.data[0]: big},
        {"60m": configs["60m"]},
        48,
        torch.Generator().manual_seed(0),
        sr_guides=guides,
        sr_prob=1.0,
        x4_groups=("60m",),
    )
    pair = s.x4_pairs["60m"][0]
    assert pair.guide.shape[-2:] == (120, 120)
    torch.testing.assert_close(
        pair.guide, normalise(guides["10m"][cfg.data[0]][0].sr[..., :120, :120], RGB_BANDS)
    )
    assert s.batch("60m", 3).box.tolist() == [6, 6, 6]


def test_holdout_cut_keeps_whole_60m_blocks(scene) -> None:
    big = {b: t.repeat(1, 1, 3, 1) for b, t in scene.items()}  # 360 rows at 10 m
    cut = holdout_cut(big, 0.2)  # 288 -> 288 (2 x 144)
    assert cut["B02"].shape[-2] == 288 and cut["B05"].shape[-2] == 144 and cut["B01"].shape[-2] == 48
    with pytest.raises(TrainingDataError, match="holdout-frac"):
        holdout_cut(scene, 0.2)  # 120 rows: nothing left


def test_cli_flags_reach_the_config(tmp_path: Path) -> None:
    a = fusion_parser()[0].parse_args(
        [
            "--data",
            str(AUSTRIA),
            "--out",
            str(tmp_path),
            "--sr-guide",
            str(tmp_path / "c"),
            "--sr-guide-prob",
            "0.6",
            "--sr-guide-steps",
            "5",
            "--holdout",
            str(AUSTRIA),
        ]
    )
    assert (
        a.sr_guide_prob == 0.6 and a.sr_guide_steps == 5 and a.sr_guide_draws == 3 and a.holdout_frac == 0.2
    )
    with pytest.raises(ConfigError, match="sr-guide-prob"):
        FusionTrainConfig(data=(str(AUSTRIA),), sr_guide_prob=1.5)
    with pytest.raises(ConfigError, match="not one of the --data"):
        FusionTrainConfig(data=(str(AUSTRIA),), holdout=str(tmp_path))
    b = fusion_parser()[0].parse_args(
        [
            "--data",
            str(AUSTRIA),
            "--out",
            str(tmp_path),
            "--groups",
            "60m",
            "--wald-x4",
            "60m",
            "--wald-x4-prob",
            "0.7",
        ]
    )
    assert b.wald_x4 == ["60m"] and b.wald_x4_prob == 0.7
    with pytest.raises(ConfigError, match="not among the trained --groups"):
        FusionTrainConfig(data=(str(AUSTRIA),), groups=("10m",), wald_x4=("60m",))


def test_trunk_stride_override_and_mixed_strides_round_trip(tmp_path: Path) -> None:
    """`--trunk-stride` changes the trained nets' trunk grid; nets of different strides load as one model."""
    from pipeline.models.fusion import FusionModel, load_fusion_model, save_fusion_model

    a = fusion_parser()[0].parse_args(["--data", str(AUSTRIA), "--out", str(tmp_path), "--trunk-stride", "1"])
    cfg = FusionTrainConfig(data=(str(AUSTRIA),), trunk_stride=a.trunk_stride)
    assert {g: c.trunk_stride for g, c in cfg.net_configs().items()} == {"10m": 1, "20m": 1, "60m": 1}
    assert FusionTrainConfig(data=(str(AUSTRIA),)).net_configs()["60m"].trunk_stride == 2  # the preset's
    with pytest.raises(ConfigError, match="trunk-stride"):
        FusionTrainConfig(data=(str(AUSTRIA),), trunk_stride=3)
    mixed = {**preset_configs("small"), "60m": cfg.net_configs()["60m"]}
    torch.manual_seed(0)
    model = FusionModel(mixed).eval()
    back = load_fusion_model(save_fusion_model(model, tmp_path / "w"))
    assert {g: back.configs[g].trunk_stride for g in ("10m", "20m", "60m")} == {"10m": 2, "20m": 2, "60m": 1}
    g = torch.Generator().manual_seed(0)
    b10, b20, b60 = (0.05 + 0.2 * torch.rand((1, c, s, s), generator=g) for c, s in ((4, 12), (6, 6), (2, 2)))
    guide = 0.05 + 0.2 * torch.rand((1, 3, 48, 48), generator=g)
    with torch.no_grad():
        out = back.fuse(b10, b20, b60, guide)
        assert out.shape == (1, 12, 48, 48) and torch.isfinite(out).all()
        torch.testing.assert_close(out, model.fuse(b10, b20, b60, guide))


def test_benchmark_row_frac_cuts_a_nested_validation_block() -> None:
    import importlib.util

    import numpy as np

    from pipeline.io.scene_files import Scene

    spec = importlib.util.spec_from_file_location("fusion_heldout", REPO / "benchmarks/fusion_heldout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    sc = Scene(
        name="s",
        b10=np.zeros((4, 120, 60), np.float32),
        b20=np.zeros((6, 60, 30), np.float32),
        b60=np.zeros((2, 20, 10), np.float32),
        crs="EPSG:32633",
        transform=(10.0, 0.0, 0.0, 0.0, -10.0, 1000.0),
    )
    cut = mod.cut_rows(sc, 0.8, 1.0)  # rows 96..120
    assert cut.b10.shape == (4, 24, 60) and cut.b20.shape == (6, 12, 30) and cut.b60.shape == (2, 4, 10)
    assert cut.transform[5] == 1000.0 - 96 * 10.0
