"""Contract of the fusion model: shapes, band order, determinism, save/load, presets, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.bands import BAND_GROUPS, S2_BANDS
from pipeline.errors import CheckpointError, DataError
from pipeline.models.fusion import FusionModel, load_fusion_model, preset_configs, save_fusion_model
from pipeline.models.fusion.config import FusionNetConfig
from pipeline.models.fusion.net import FusionGroupNet
from pipeline.models.sensor import upsample


def _inputs(h: int = 6, w: int = 12, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(1, 4, h, w, generator=g) * 0.3,
        torch.rand(1, 6, h // 2, w // 2, generator=g) * 0.3,
        torch.rand(1, 2, h // 6, w // 6, generator=g) * 0.3,
        torch.rand(1, 3, 4 * h, 4 * w, generator=g) * 0.3,
    )


def _small(seed: int = 0, **overrides) -> FusionModel:
    torch.manual_seed(seed)
    return FusionModel(preset_configs("small", **overrides)).eval()


def test_fuse_shape_dtype_and_finite() -> None:
    out = _small().fuse(*_inputs())
    assert out.shape == (1, 12, 24, 48) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and (out >= 0).all()


def test_group_inputs_and_outputs_per_group() -> None:
    cfgs = preset_configs("small")
    assert cfgs["10m"].input_bands == ("B02", "B03", "B04", "B08")
    assert (
        cfgs["20m"].input_bands[-6:] == ("B05", "B06", "B07", "B8A", "B11", "B12")
        and len(cfgs["20m"].input_bands) == 10
    )
    assert cfgs["60m"].input_bands[-2:] == ("B01", "B09") and len(cfgs["60m"].input_bands) == 12
    assert {k: c.factor for k, c in cfgs.items()} == {"10m": 4, "20m": 8, "60m": 24}
    for g in BAND_GROUPS:
        assert cfgs[g.name].output_bands == g.bands


def test_band_order_with_zero_correction_is_bilinear_per_band() -> None:
    # With the per-band output scale at 0 (and no back-projection) every band is its own bilinear
    # upsampling: checks S2 ordering.
    model = _small(backproject=0)
    for net in model.nets.values():
        torch.nn.init.zeros_(net.out_scale)
    b10, b20, b60, guide = _inputs()
    out = model.fuse(b10, b20, b60, guide)
    ups = {"10m": upsample(b10, 4), "20m": upsample(b20, 8), "60m": upsample(b60, 24)}
    for g in BAND_GROUPS:
        for i, band in enumerate(g.bands):
            torch.testing.assert_close(
                out[:, S2_BANDS.index(band)], ups[g.name][:, i].clamp_min(0), atol=1e-5, rtol=0
            )


def test_seeded_construction_and_fuse_are_deterministic() -> None:
    a, b = _small(7), _small(7)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = _inputs(seed=3)
    assert torch.equal(a.fuse(*x), b.fuse(*x))
    assert not torch.equal(_small(8).fuse(*x), a.fuse(*x))


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _small(1)
    save_fusion_model(model, tmp_path / "w")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["10m", "20m", "60m"]
    loaded = load_fusion_model(tmp_path / "w")
    x = _inputs(seed=4)
    torch.testing.assert_close(loaded.fuse(*x), model.fuse(*x))


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_trunk_stride_keeps_shape(stride: int) -> None:
    cfg = FusionNetConfig(group="20m", nf=8, gc=4, nb_branch=0, nb_trunk=1, trunk_stride=stride)
    net = FusionGroupNet(cfg)
    y = net(torch.zeros(2, 10, 16, 24), torch.zeros(2, 3, 16, 24))
    assert y.shape == (2, 6, 16, 24)


def test_paper_preset_matches_reference_layout() -> None:
    with torch.device("meta"):
        model = FusionModel(preset_configs("paper", residual=False))
    counts = {k: sum(p.numel() for p in n.parameters()) for k, n in model.nets.items()}
    # n_params of the reference v1 FusionRRDBNet groups (manifests in data/)
    assert counts == {"10m": 10986696, "20m": 10991306, "60m": 10990150}


def test_shipped_weights_load_and_run() -> None:
    model = load_fusion_model()
    # the held-out numbers in docs/fusion.md are with the projection onto the measured bands
    assert {k: c.backproject for k, c in model.configs.items()} == {"10m": 5, "20m": 5, "60m": 5}
    out = model.fuse(*_inputs())
    assert out.shape == (1, 12, 24, 48) and torch.isfinite(out).all()


def test_bad_inputs_raise_data_errors() -> None:
    model = _small()
    b10, b20, b60, guide = _inputs()
    with pytest.raises(DataError, match="multiples of 6"):
        model.fuse(b10[..., :4], b20, b60, guide)
    with pytest.raises(DataError, match="guide_rgb has shape"):
        model.fuse(b10, b20, b60, guide[..., :-4])
    b10n = b10.clone()
    b10n[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        model.fuse(b10n, b20, b60, guide)


def test_missing_weights_folder_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_fusion_model(tmp_path / "nope")
    (tmp_path / "w" / "10m").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="lacks"):
        load_fusion_model(tmp_path / "w")


def test_presets_are_brightness_equivariant() -> None:
    # norm="local": inputs are divided by their image mean and the correction is scaled by the local band
    # level, so scaling every input reflectance by k scales the output by k (dark and bright scenes alike).
    model = _small(2)
    for net in model.nets.values():
        torch.nn.init.constant_(net.out_scale, 0.5)
    b10, b20, b60, guide = (x + 0.05 for x in _inputs(seed=5))
    out = model.fuse(b10, b20, b60, guide)
    out2 = model.fuse(0.5 * b10, 0.5 * b20, 0.5 * b60, 0.5 * guide)
    torch.testing.assert_close(out2, 0.5 * out, atol=1e-5, rtol=1e-4)


def test_backprojection_makes_each_group_reproduce_its_measured_bands() -> None:
    """Degraded by the sensor model, the fused bands give back the inputs (real Austria patch)."""
    from pipeline.io.scene_files import read_scene
    from pipeline.models import baselines
    from pipeline.models.sensor import wald_degrade

    scene = read_scene(
        Path(__file__).resolve().parents[3] / "data/samples/catalog/S2A_MSIL2A_20170613T101031_87_48"
    )
    b10, b20, b60 = (torch.from_numpy(a)[None] for a in (scene.b10, scene.b20, scene.b60))
    guide = baselines.upsample(baselines.rgb_of(b10), 4)
    errs = {}
    for n in (0, 5):
        out = _small(3, backproject=n).fuse(b10, b20, b60, guide)
        errs[n] = {
            g.name: float(
                (wald_degrade(out[:, [S2_BANDS.index(b) for b in g.bands]], g.factor_to_target) - lr)
                .abs()
                .mean()
                / lr.mean()
            )
            for g, lr in zip(BAND_GROUPS, (b10, b20, b60), strict=True)
        }
    for g in BAND_GROUPS:
        assert errs[5][g.name] < 0.25 * errs[0][g.name] and errs[5][g.name] < 0.01, errs
