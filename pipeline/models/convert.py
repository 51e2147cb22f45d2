"""The authors' PyTorch Lightning checkpoints -> project format (for `difffusr convert-checkpoint`).

Reads `ckpt["state_dict"]` without executing arbitrary pickled code (unknown classes such as
`easydict.EasyDict` in `hyper_parameters` are replaced by inert stubs), tells the SR diffusion
model from the fusion network by its keys, and writes `model.safetensors` + `config.json` +
`bands.json`. Every missing, unexpected or wrong-shape key is reported.

SR mapping (manifest `sr_lightning_state_dict.json`): `encoder.*` -> `encoder.*`, `E.*` -> `E.*`,
`ema.*` -> `model.*` (the reference infers with the EMA copy), `model.*` (raw training weights) is
read but superseded by `ema.*`, `diffusion.*` schedule buffers are checked against the cosine
schedule rebuilt here. Fusion checkpoints go to `pipeline.models.fusion.convert.convert_fusion_checkpoint`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import CheckpointError
from pipeline.models.diffusion.config import get_preset
from pipeline.models.diffusion.model import SRDiffusion, inference_state_dict, save_sr_model

_SAFE_MODULES = ("torch", "collections", "numpy", "_codecs", "builtins", "copyreg", "pathlib", "datetime")


class _Stub(dict):
    """Inert stand-in for classes we do not import (EasyDict, AttributeDict, callbacks, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub()


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in _SAFE_MODULES and not (
            module == "builtins" and name in ("eval", "exec", "open", "__import__", "getattr")
        ):
            return super().find_class(module, name)
        return type(name, (_Stub,), {"__module__": "_stub." + module})


class _SafePickleModule:
    Unpickler = _SafeUnpickler
    __name__ = "difffusr_safe_pickle"

    @staticmethod
    def load(f: Any, **kw: Any) -> Any:
        return _SafeUnpickler(f, **kw).load()


def read_lightning_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Return `ckpt["state_dict"]` of a Lightning .ckpt (CPU tensors); CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' does not exist; pass the path of a Lightning .ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (any refusal: retry with the allow-listing unpickler below)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_SafePickleModule)
        except Exception as exc:
            raise CheckpointError(
                f"'{path}' is not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]}); "
                "pass the .ckpt "
                "downloaded from Hugging Face NorskRegnesentralSTI/DiffFuSR"
            ) from exc
    sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise CheckpointError(
            f"'{path}' has no Lightning 'state_dict' of tensors (top-level keys: "
            f"{sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__}); pass a DiffFuSR .ckpt"
        )
    return dict(sd)


def detect_kind(state_dict: dict[str, torch.Tensor]) -> str:
    """'sr' or 'fusion' from the key prefixes; CheckpointError otherwise."""
    keys = list(state_dict)
    if any(k.startswith("rrdb_block_") for k in keys):
        return "fusion"
    if any(k.startswith(("ema.", "model.")) for k in keys) and any(k.startswith("encoder.") for k in keys):
        return "sr"
    raise CheckpointError(
        f"checkpoint keys {keys[:4]} match neither the DiffFuSR SR model "
        "(encoder./E./model./ema./diffusion.) nor "
        "the fusion network (rrdb_block_*); this is a checkpoint of another model"
    )


def map_sr_state_dict(sd: dict[str, torch.Tensor], model_keys: dict[str, torch.Size]) -> dict[str, Any]:
    """Map a Lightning SR state_dict onto `SRDiffusion` keys.

    Args:
        sd: the checkpoint's state_dict.
        model_keys: target key -> shape (the full `SRDiffusion(paper)` state_dict).

    Returns:
        {"state_dict": mapped tensors, "missing": [...], "unexpected": [...], "wrong_shape": [...],
         "superseded": [...] (raw `model.*` replaced by `ema.*`), "schedule": [...] (diffusion.* keys)}
    """
    use_ema = any(k.startswith("ema.") for k in sd)
    mapped: dict[str, torch.Tensor] = {}
    unexpected, superseded, schedule, wrong = [], [], [], []
    for k, v in sd.items():
        if k.startswith("diffusion."):
            schedule.append(k)
            continue
        if k.startswith("ema."):
            dst = "model." + k[4:]
        elif k.startswith("model.") and use_ema:
            superseded.append(k)
            continue
        else:
            dst = k
        if dst not in model_keys:
            unexpected.append(k)
        elif tuple(v.shape) != tuple(model_keys[dst]):
            wrong.append(f"{k} {tuple(v.shape)} != {tuple(model_keys[dst])}")
        else:
            mapped[dst] = v
    missing = [k for k in model_keys if k not in mapped]
    return {
        "state_dict": mapped,
        "missing": missing,
        "unexpected": unexpected,
        "wrong_shape": wrong,
        "superseded": superseded,
        "schedule": schedule,
    }


def convert_sr_checkpoint(sd: dict[str, torch.Tensor], out_dir: str | Path) -> dict[str, Any]:
    """Convert an SR Lightning state_dict into the `paper` preset and save it; returns the report."""
    model = SRDiffusion(get_preset("paper"))
    res = map_sr_state_dict(sd, {k: v.shape for k, v in model.state_dict().items()})
    diffs = {}
    for k in res["schedule"]:
        name = k.split(".", 1)[1]
        ours = getattr(model.schedule, name, None)
        if ours is not None and ours.shape == sd[k].shape:
            diffs[name] = float((ours - sd[k].float()).abs().max())
    report = {k: v for k, v in res.items() if k != "state_dict"}
    report["schedule_max_abs_diff"] = diffs
    report["kind"] = "sr"
    if res["missing"] or res["unexpected"] or res["wrong_shape"]:
        raise CheckpointError(
            f"SR checkpoint does not match the paper architecture: {len(res['missing'])} missing "
            f"{res['missing'][:3]}, {len(res['unexpected'])} unexpected {res['unexpected'][:3]}, "
            f"{len(res['wrong_shape'])} wrong-shape {res['wrong_shape'][:3]}; "
            "it may come from another revision"
        )
    model.load_state_dict(res["state_dict"], strict=True)
    save_sr_model(model, out_dir, inference_state_dict(model))
    report["out_dir"] = str(out_dir)
    return report


def convert_checkpoint(path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Read a Lightning .ckpt, detect SR vs fusion, convert; return the report.

    The report is also written to OUT_DIR/conversion_report.json.
    """
    sd = read_lightning_state_dict(path)
    kind = detect_kind(sd)
    if kind == "sr":
        report = convert_sr_checkpoint(sd, out_dir)
    else:
        from pipeline.models.fusion.convert import convert_fusion_checkpoint

        report = convert_fusion_checkpoint(sd, out_dir)
        report = dict(report) if isinstance(report, dict) else {"report": str(report)}
        report.setdefault("kind", "fusion")
    Path(out_dir, "conversion_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
