"""The project's checkpoint format: `model.safetensors` + `config.json` + `bands.json` in one folder.

`config.json` carries `kind` (which network family, e.g. "diffusion_sr", "fusion") and everything
needed to rebuild the network; `bands.json` lists the input and output band ids, so that loading
weights for the wrong bands fails with a message instead of producing garbage.
Writes are atomic: the folder is built under a temporary name and renamed into place, so a crash
leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BANDS_FILE = "bands.json"


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        state_dict: tensor name -> tensor (CPU).
        config: the model's JSON config; `config["kind"]` names the network family.
        bands: {"inputs": [...], "outputs": [...]} band ids.
        path: the folder it was read from.
    """

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    bands: dict[str, list[str]]
    path: Path


def save_checkpoint(
    folder: str | Path,
    state_dict: dict[str, torch.Tensor],
    *,
    config: dict[str, Any],
    input_bands: list[str],
    output_bands: list[str],
) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one).

    Args:
        folder: destination folder; its parent is created.
        state_dict: tensors to store; they are made contiguous and moved to CPU.
        config: JSON-serialisable model config; must contain "kind".
        input_bands: band ids the network takes, in channel order.
        output_bands: band ids it produces, in channel order.
    """
    if "kind" not in config:
        raise ValueError("checkpoint config needs a 'kind' entry")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"kind": str(config["kind"])})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        (tmp / BANDS_FILE).write_text(json.dumps({"inputs": list(input_bands), "outputs": list(output_bands)}, indent=2))
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_checkpoint(
    folder: str | Path, *, kind: str | None = None, input_bands: list[str] | None = None
) -> Checkpoint:
    """Read a checkpoint folder and check that it is what the caller expects.

    Args:
        folder: a folder written by `save_checkpoint`.
        kind: expected `config["kind"]`; a different kind raises CheckpointError.
        input_bands: expected input band ids; a mismatch raises CheckpointError.
    """
    folder = Path(folder)
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE, BANDS_FILE) if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint folder '{folder}' lacks {', '.join(missing)}; pass a folder written by "
            "`difffusr train` or `difffusr convert-checkpoint`"
        )
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        bands = json.loads((folder / BANDS_FILE).read_text())
        state_dict = load_file(str(folder / WEIGHTS_FILE))
    except Exception as exc:  # corrupt JSON or safetensors: say which file
        raise CheckpointError(f"checkpoint '{folder}' is unreadable ({type(exc).__name__}: {exc}); re-export it") from exc
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint '{folder}' holds a {config.get('kind')!r} model, but a {kind!r} model was requested; "
            "point the option at the matching checkpoint"
        )
    if input_bands is not None and list(bands.get("inputs", [])) != list(input_bands):
        raise CheckpointError(
            f"checkpoint '{folder}' was trained on bands {bands.get('inputs')}, but the input has {list(input_bands)}; "
            "use weights trained for these bands"
        )
    return Checkpoint(state_dict=state_dict, config=config, bands=bands, path=folder)
