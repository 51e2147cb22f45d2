"""Converting the authors' SR Lightning checkpoint (built here from the key/shape manifest copied into
tests/models/diffusion/data/, with random tensors, saved the way Lightning saves) into the paper preset."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from pipeline.cli.convert import cmd_convert
from pipeline.errors import CheckpointError
from pipeline.models.convert import detect_kind, map_sr_state_dict, read_lightning_state_dict
from pipeline.models.diffusion import SRDiffusion, get_preset

MANIFEST = json.loads(
    (Path(__file__).parent / "diffusion" / "data" / "sr_lightning_state_dict.json").read_text()
)
DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32}


def _state_dict(materialise: bool) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the manifest's keys, shapes and dtypes, in its order.

    materialise=False uses one random value per tensor, broadcast (torch.save stores 1 element).
    """
    g = torch.Generator().manual_seed(0)
    shapes = {k: (s, d) for k, s, d in MANIFEST["params"] + MANIFEST["buffers"]}
    sd = {}
    for k in MANIFEST["state_dict_order"]:
        shape, dt = shapes[k]
        if DTYPES[dt] == torch.float32:
            t = 0.02 * torch.randn(shape if materialise else [1] * len(shape) or [], generator=g)
            if k.endswith("running_var"):  # BatchNorm variances are positive in any real checkpoint
                t = t.abs() + 1.0
            sd[k] = t if materialise else t.expand(shape)
        else:
            sd[k] = torch.zeros(shape, dtype=DTYPES[dt])
    return sd


def _save_like_lightning(sd: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save of the Lightning layout.

    hyper_parameters is an EasyDict from a module absent at load time.
    """
    mod = types.ModuleType("easydict")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "easydict"
    EasyDict.__qualname__ = "EasyDict"
    mod.EasyDict = EasyDict
    sys.modules["easydict"] = mod
    try:
        hp = EasyDict(lit_model=EasyDict(args=EasyDict(scale=4)))
        torch.save(
            {
                "epoch": 3,
                "global_step": 1000,
                "pytorch-lightning_version": "2.0.0",
                "state_dict": sd,
                "hyper_parameters": hp,
                "optimizer_states": [],
                "lr_schedulers": [],
            },
            path,
        )
    finally:
        del sys.modules["easydict"]


def test_manifest_keys_map_onto_the_paper_preset_with_zero_missing_or_unexpected(tmp_path):
    path = tmp_path / "last.ckpt"
    _save_like_lightning(_state_dict(materialise=False), path)
    sd = read_lightning_state_dict(path)
    assert len(sd) == MANIFEST["n_state_dict_entries"] == 2492
    assert detect_kind(sd) == "sr"
    with torch.device("meta"):
        target = {k: v.shape for k, v in SRDiffusion(get_preset("paper")).state_dict().items()}
    res = map_sr_state_dict(sd, target)
    assert res["missing"] == [] and res["unexpected"] == [] and res["wrong_shape"] == []
    assert len(res["superseded"]) == 841 and len(res["schedule"]) == 14


def test_not_a_checkpoint_and_another_model_are_rejected(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_lightning_state_dict(bad)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="another model"):
        cmd_convert([str(other), str(tmp_path / "out")])
    nosd = tmp_path / "nosd.ckpt"
    torch.save({"weights": torch.zeros(1)}, nosd)
    with pytest.raises(CheckpointError, match="state_dict"):
        read_lightning_state_dict(nosd)


@pytest.mark.slow
def test_full_random_checkpoint_converts_loads_and_runs(tmp_path, capsys):
    from pipeline.models.diffusion import load_sr_model

    path = tmp_path / "last.ckpt"
    sd = _state_dict(materialise=True)
    # the schedule buffers of a real checkpoint: the cosine schedule
    from pipeline.models.diffusion import CosineSchedule

    s = CosineSchedule.cosine(1000)
    for name in ("betas", "alphas_cumprod", "sqrt_recip_alphas_cumprod"):
        sd[f"diffusion.{name}"] = getattr(s, name).clone()
    _save_like_lightning(sd, path)
    del sd
    assert cmd_convert([str(path), str(tmp_path / "paper")]) == 0
    out = capsys.readouterr().out
    assert "missing: 0" in out and "unexpected: 0" in out and "wrong_shape: 0" in out
    report = json.loads((tmp_path / "paper" / "conversion_report.json").read_text())
    assert report["schedule_max_abs_diff"]["betas"] == 0.0
    model = load_sr_model(tmp_path / "paper")
    # the published checkpoints sample with 20 DDIM steps unless told otherwise (the shipped small: fewer)
    assert model.config.preset == "paper" and model.config.default_steps == 20
    ref = read_lightning_state_dict(path)
    assert torch.equal(
        model.state_dict()["model.final_conv.block.3.bias"], ref["ema.final_conv.block.3.bias"]
    )
    with torch.no_grad():
        y = model.super_resolve(
            0.2 * torch.ones(1, 3, 16, 16), steps=2, generator=torch.Generator().manual_seed(0)
        )
    assert y.shape == (1, 3, 64, 64) and torch.isfinite(y).all()
