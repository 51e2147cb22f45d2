"""Conversion of both published fusion variants, from state_dicts built from the reference manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.errors import CheckpointError
from pipeline.models.fusion import load_fusion_model
from pipeline.models.fusion.convert import convert_fusion_checkpoint, detect_fusion_variant

DATA = Path(__file__).parent / "data"


def _tensor(shape: list[int], dtype: str, g: torch.Generator, key: str) -> torch.Tensor:
    dt = getattr(torch, dtype)
    if dt.is_floating_point:
        return torch.randn(shape, generator=g) * 0.02
    ratio = 4 if "_10_" in key else 8 if "_20_" in key else 24
    return torch.full(shape, ratio, dtype=dt)


def v1_state_dict() -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    g = torch.Generator().manual_seed(1)
    sd, n_params = {}, {}
    for grp in ("60", "20", "10"):  # Lightning order of v1
        m = json.loads((DATA / f"fusion_v1_rrdb_block_{grp}_fusion.json").read_text())
        prefix = m["prefix_in_lightning_state_dict"]
        for key, shape, dtype in m["params"] + m["buffers"]:
            sd[prefix + key] = _tensor(shape, dtype, g, prefix)
        n_params[f"{grp}m"] = m["n_params"]
    return sd, n_params


def v2_state_dict() -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    g = torch.Generator().manual_seed(2)
    m = json.loads((DATA / "fusion_v2_MTFNetFusion_lightning_state_dict.json").read_text())
    sd = {key: _tensor(shape, dtype, g, key) for key, shape, dtype in m["params"] + m["buffers"]}
    n_params = {
        grp[len("rrdb_block_") : -len("_fusion")] + "m": v["n_params"]
        for grp, v in m["top_level_children"].items()
        if grp.startswith("rrdb_block")
    }
    return sd, n_params


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each variant converted once: variant -> (state_dict, manifest n_params, report, folder)."""
    out = {}
    for variant, build in (("v1", v1_state_dict), ("v2", v2_state_dict)):
        sd, n_params = build()
        folder = tmp_path_factory.mktemp(variant) / "w"
        out[variant] = (sd, n_params, convert_fusion_checkpoint(sd, folder), folder)
    return out


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_converts_and_loads_both_variants(variant: str, converted: dict) -> None:
    sd, n_params, report, folder = converted[variant]
    assert detect_fusion_variant(sd) == variant
    assert report["variant"] == variant and report["ignored_keys"] == []
    assert {g: v["params"] for g, v in report["groups"].items()} == n_params
    model = load_fusion_model(folder)
    for grp, prefix in (("10m", "rrdb_block_10_fusion."), ("60m", "rrdb_block_60_fusion.")):
        loaded = model.nets[grp].state_dict()
        for k, v in sd.items():
            if k.startswith(prefix):
                torch.testing.assert_close(loaded[k[len(prefix) :]], v)
    if variant == "v1":
        return  # the paper-size forward is in test_converted_v1_runs (slow)
    _check_forward(model)


@pytest.mark.slow
def test_converted_v1_runs(converted: dict) -> None:
    _check_forward(load_fusion_model(converted["v1"][3]))


def _check_forward(model) -> None:
    g = torch.Generator().manual_seed(3)
    out = model.fuse(
        torch.rand(1, 4, 6, 6, generator=g) * 0.3,
        torch.rand(1, 6, 3, 3, generator=g) * 0.3,
        torch.rand(1, 2, 1, 1, generator=g) * 0.3,
        torch.rand(1, 3, 24, 24, generator=g) * 0.3,
    )
    assert out.shape == (1, 12, 24, 24) and torch.isfinite(out).all()


def test_v1_band_order_follows_the_reference(converted: dict) -> None:
    folder = converted["v1"][3]
    bands = json.loads((folder / "10m" / "bands.json").read_text())
    assert bands == {"inputs": ["B04", "B03", "B02", "B08"], "outputs": ["B04", "B03", "B02", "B08"]}
    bands60 = json.loads((folder / "60m" / "bands.json").read_text())
    assert bands60["inputs"][-2:] == ["B01", "B09"] and len(bands60["inputs"]) == 12


def test_missing_tensor_is_reported(tmp_path: Path) -> None:
    sd, _ = v1_state_dict()
    del sd["rrdb_block_20_fusion.conv_last.bias"]
    with pytest.raises(CheckpointError, match="group 20m .*missing \\['conv_last.bias'\\]"):
        convert_fusion_checkpoint(sd, tmp_path / "w")


def test_unrelated_state_dict_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a DiffFuSR fusion checkpoint"):
        convert_fusion_checkpoint({"encoder.conv_first.weight": torch.zeros(1)}, tmp_path / "w")
