"""The project's checkpoint format: `model.safetensors` + `config.json` + `bands.json` in one folder.

`config.json` carries `kind` (which network family, e.g. "diffusion_sr", "fusion") and everything
needed to rebuild the network; `bands.json` lists the input and output band ids, so that loading
weights for the wrong bands fails with a message instead of producing garbage.
Writes are atomic: the folder is built under a temporary name and renamed into place, so a crash
leaves either the old or the new checkpoint.

`check_sr_weights` / `check_fusion_weights` read only the JSON files and the safetensors header (no torch), so
the CLI checks weights on the driver, before any search or ingest, with the loaders' messages.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.bands import BAND_GROUPS, RGB_BANDS
from pipeline.errors import CheckpointError

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BANDS_FILE = "bands.json"
# The kinds are defined here only; the models' writers and loaders import them.
#: `config["kind"]` of the diffusion SR network.
SR_KIND = "diffusion_sr"
#: `config["kind"]` of one fusion group network (a folder per group: 10m/, 20m/, 60m/).
FUSION_KIND = "fusion"
#: `config["kind"]` of one checkpoint holding all three fusion networks, as the training launcher exports it.
FUSION_BUNDLE_KIND = "fusion_bundle"


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
    from safetensors.torch import save_file

    if "kind" not in config:
        raise ValueError("checkpoint config needs a 'kind' entry")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"kind": str(config["kind"])})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        (tmp / BANDS_FILE).write_text(
            json.dumps({"inputs": list(input_bands), "outputs": list(output_bands)}, indent=2)
        )
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


def read_checkpoint_header(
    folder: str | Path, *, kind: str | None = None, input_bands: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Check a checkpoint folder without loading its tensors; return its (config, bands).

    Reads config.json, bands.json and the safetensors header (a few kB), so it is cheap and needs no torch.

    Args:
        folder: a folder written by `save_checkpoint`.
        kind: expected `config["kind"]`; a different kind raises CheckpointError.
        input_bands: expected input band ids; a mismatch raises CheckpointError.

    Raises:
        CheckpointError: a file is missing, unreadable or truncated, or the kind or bands differ.
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
        _check_safetensors_header(folder / WEIGHTS_FILE)
    except Exception as exc:  # corrupt JSON or safetensors: say which file
        raise CheckpointError(
            f"checkpoint '{folder}' is unreadable ({type(exc).__name__}: {exc}); re-export it"
        ) from exc
    if not isinstance(config, dict) or not isinstance(bands, dict):
        raise CheckpointError(
            f"checkpoint '{folder}' has a config.json or bands.json that is not an object; re-export it"
        )
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint '{folder}' holds a {config.get('kind')!r} model, but a {kind!r} model was "
            "requested; point the option at the matching checkpoint"
        )
    if input_bands is not None and list(bands.get("inputs", [])) != list(input_bands):
        raise CheckpointError(
            f"checkpoint '{folder}' was trained on bands {bands.get('inputs')}, but the input has "
            f"{list(input_bands)}; use weights trained for these bands"
        )
    return config, bands


def _check_safetensors_header(path: Path) -> None:
    """Raise ValueError unless `path` starts with a complete safetensors header (8-byte length + JSON)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path.name} is {size} bytes, not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"{path.name} is truncated ({size} bytes, header alone needs {n + 8})")
        json.loads(f.read(n))


def check_sr_weights(folder: str | Path) -> None:
    """Cheap check that `folder` holds diffusion SR weights (for `load_sr_model`); CheckpointError if not."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"SR weights folder '{folder}' does not exist; pass a folder written by `difffusr train sr` or "
            "`difffusr convert-checkpoint`"
        )
    read_checkpoint_header(folder, kind=SR_KIND, input_bands=list(RGB_BANDS))


def check_fusion_weights(folder: str | Path) -> None:
    """Cheap check that `folder` holds fusion weights (as `load_fusion_model` loads); CheckpointError if not.

    A fusion weights folder is either one bundle checkpoint (kind "fusion_bundle") or one checkpoint of kind
    "fusion" per group subfolder 10m/, 20m/, 60m/.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"fusion weights folder '{folder}' does not exist; pass --fusion-weights DIR")
    if (folder / WEIGHTS_FILE).is_file():
        read_checkpoint_header(folder, kind=FUSION_BUNDLE_KIND)
        return
    for g in BAND_GROUPS:
        sub = folder / g.name
        if not sub.is_dir():
            raise CheckpointError(
                f"fusion weights folder '{folder}' lacks the '{g.name}' group checkpoint; expected "
                "subfolders 10m/ 20m/ 60m/ as written by `difffusr train fusion`"
            )
        config, bands = read_checkpoint_header(sub, kind=FUSION_KIND)
        net = config.get("net") if isinstance(config.get("net"), dict) else {}
        group = net.get("group")
        # an empty output_bands in the net config means the group's own bands (FusionNetConfig)
        if group != g.name or list(bands.get("outputs", [])) != list(net.get("output_bands") or g.bands):
            raise CheckpointError(f"checkpoint '{sub}' is for group {group!r}, not {g.name!r}")


def load_checkpoint(
    folder: str | Path, *, kind: str | None = None, input_bands: list[str] | None = None
) -> Checkpoint:
    """Read a checkpoint folder and check that it is what the caller expects.

    Args:
        folder: a folder written by `save_checkpoint`.
        kind: expected `config["kind"]`; a different kind raises CheckpointError.
        input_bands: expected input band ids; a mismatch raises CheckpointError.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config, bands = read_checkpoint_header(folder, kind=kind, input_bands=input_bands)
    try:
        state_dict = load_file(str(folder / WEIGHTS_FILE))
    except Exception as exc:  # corrupt safetensors past its header: say which file
        raise CheckpointError(
            f"checkpoint '{folder}' is unreadable ({type(exc).__name__}: {exc}); re-export it"
        ) from exc
    return Checkpoint(state_dict=state_dict, config=config, bands=bands, path=folder)
