"""Convert published DiffFuSR fusion checkpoints (Lightning `FusionNetwork` state_dicts) to the project
format.

Two variants exist in the reference code (see the manifests `fusion_v1_*.json`, `fusion_v2_*.json`):
- v1: three `FusionRRDBNet` (two-branch RRDB, nf 64, 5+5+5 RRDB, gc 32), keys
  `rrdb_block_{60,20,10}_fusion.*`, told apart by `rrdb_block_10_fusion.rgb_conv_first.weight`. Loads into
  FusionGroupNet with `residual=False, trunk_stride=1`; its inputs are the finer groups' bands too, in the
  reference order.
- v2: three `MTFNetFusion` (nf 32, nb 3, gc 16), told apart by `rrdb_block_10_fusion.pan_mixer.logits`.
  Loads into MTFDetailNet (own bands only).
Band orders follow the reference: 10 m group (B04, B03, B02, B08); 20 m (B05 B06 B07 B8A B11 B12);
60 m (B01 B09).
The output folder holds `10m/ 20m/ 60m/` checkpoints (kind "fusion") that `load_fusion_model` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.errors import CheckpointError
from pipeline.models.fusion.config import FusionNetConfig
from pipeline.models.fusion.model import FusionModel, save_fusion_model

PREFIX = {"10m": "rrdb_block_10_fusion.", "20m": "rrdb_block_20_fusion.", "60m": "rrdb_block_60_fusion."}
V1_KEY = "rrdb_block_10_fusion.rgb_conv_first.weight"
V2_KEY = "rrdb_block_10_fusion.pan_mixer.logits"
_OWN = {
    "10m": ("B04", "B03", "B02", "B08"),
    "20m": ("B05", "B06", "B07", "B8A", "B11", "B12"),
    "60m": ("B01", "B09"),
}
_V1_INPUTS = {
    "10m": _OWN["10m"],
    "20m": _OWN["10m"] + _OWN["20m"],
    "60m": _OWN["10m"] + _OWN["20m"] + _OWN["60m"],
}


def detect_fusion_variant(state_dict: dict[str, Any]) -> str | None:
    """ "v1", "v2", or None when the keys are of neither fusion network."""
    if V1_KEY in state_dict:
        return "v1"
    if V2_KEY in state_dict:
        return "v2"
    return None


def variant_configs(variant: str) -> dict[str, FusionNetConfig]:
    """Group configs that reproduce a published variant's architecture and band orders."""
    if variant == "v1":
        return {
            g: FusionNetConfig(
                group=g,
                arch="rrdb",
                nf=64,
                gc=32,
                nb_branch=5,
                nb_trunk=5,
                trunk_stride=1,
                residual=False,
                input_bands=_V1_INPUTS[g],
                output_bands=_OWN[g],
            )
            for g in PREFIX
        }
    if variant == "v2":
        return {
            g: FusionNetConfig(
                group=g,
                arch="mtf",
                nf=32,
                gc=16,
                nb_branch=0,
                nb_trunk=3,
                input_bands=_OWN[g],
                output_bands=_OWN[g],
            )
            for g in PREFIX
        }
    raise CheckpointError(f"unknown fusion variant {variant!r}")


def convert_fusion_checkpoint(state_dict: dict[str, torch.Tensor], out_dir: str | Path) -> dict[str, Any]:
    """Convert a published fusion state_dict and write `out_dir/{10m,20m,60m}`.

    Args:
        state_dict: the Lightning checkpoint's `state_dict` (keys `rrdb_block_*_fusion.*`).
        out_dir: destination folder (created; replaced group by group).

    Returns:
        report: {"variant", "out_dir", "groups": {g: {"tensors", "params"}}, "ignored_keys"}.

    Raises:
        CheckpointError: neither variant, or missing/unexpected/mis-shaped tensors (listed).
    """
    variant = detect_fusion_variant(state_dict)
    if variant is None:
        raise CheckpointError(
            f"state_dict is not a DiffFuSR fusion checkpoint: neither '{V1_KEY}' (v1) nor '{V2_KEY}' (v2) "
            "is present"
        )
    configs = variant_configs(variant)
    with torch.device("meta"):  # layout only; the tensors are assigned from the checkpoint below
        model = FusionModel(configs)
    report: dict[str, Any] = {"variant": variant, "out_dir": str(out_dir), "groups": {}}
    used: set[str] = set()
    for g, prefix in PREFIX.items():
        sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        used.update(prefix + k for k in sub)
        net = model.nets[g]
        expected = net.state_dict()
        missing = sorted(set(expected) - set(sub))
        unexpected = sorted(set(sub) - set(expected))
        shapes = sorted(
            k for k in set(sub) & set(expected) if tuple(sub[k].shape) != tuple(expected[k].shape)
        )
        if missing or unexpected or shapes:
            raise CheckpointError(
                f"fusion {variant} group {g} does not match the reference layout: missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}, wrong shape {shapes[:5]}"
            )
        net.load_state_dict({k: v.to(expected[k].dtype) for k, v in sub.items()}, strict=True, assign=True)
        report["groups"][g] = {"tensors": len(sub), "params": sum(p.numel() for p in net.parameters())}
    report["ignored_keys"] = sorted(set(state_dict) - used)
    save_fusion_model(
        model, out_dir, extra={"source": f"DiffFuSR published fusion {variant}", "converted": True}
    )
    return report
