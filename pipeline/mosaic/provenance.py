"""What the STAC item and the manifest record to reproduce a product exactly: the input items and their
processing baselines, the weights' content hashes, the sampler settings and the code version.

No torch here (the mosaic layer): the shipped weights' folders are located from the package's path.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from pipeline import __version__

#: The shipped weights (the loaders' defaults, `pipeline.models.diffusion.model.DEFAULT_WEIGHTS` and the
#: fusion's; tests/pipeline/test_uncertainty.py checks they agree).
PACKAGE = Path(__file__).resolve().parents[1]
DEFAULT_SR_WEIGHTS = PACKAGE / "weights" / "sr_small"
DEFAULT_FUSION_WEIGHTS = PACKAGE / "weights" / "fusion_small"
#: Item properties that name a granule's processing baseline (Earth Search / Planetary Computer, CDSE).
_BASELINE_KEYS = ("s2:processing_baseline", "processing:version", "processing_baseline")


def folder_digest(folder: str | Path) -> str:
    """sha256 over a weights folder's files (relative path and content, sorted): equal digests, equal
    weights and configs."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def weights_provenance(sr_weights: str | None, fusion_weights: str | None) -> dict[str, dict[str, str]]:
    """{"sr"|"fusion": {"path", "sha256"}} of the weights a learned run loads."""
    out = {}
    for name, given, default in (
        ("sr", sr_weights, DEFAULT_SR_WEIGHTS),
        ("fusion", fusion_weights, DEFAULT_FUSION_WEIGHTS),
    ):
        folder = Path(given) if given else default
        out[name] = {
            "path": str(given) if given else f"shipped:{folder.name}",
            "sha256": folder_digest(folder),
        }
    return out


def code_version() -> dict[str, str | None]:
    """difffusr's version and, when the package runs from a git checkout, its commit (+ "-dirty" when
    tracked files differ from it)."""
    out: dict[str, str | None] = {"difffusr": __version__, "git": None}
    try:
        run = lambda *a: subprocess.run(
            ["git", "-C", str(PACKAGE), *a], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE)))
        out["git"] = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def input_provenance(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per input item: id, collection, datetime, platform and processing baseline."""
    out = []
    for item in items:
        props = item.get("properties", {})
        baseline = next((props[k] for k in _BASELINE_KEYS if props.get(k) is not None), None)
        out.append(
            {
                "id": item["id"],
                "collection": item.get("collection"),
                "datetime": props.get("datetime"),
                "platform": props.get("platform"),
                "processing_baseline": baseline,
            }
        )
    return out


def sr_default_steps(sr_weights: str | None) -> int | None:
    """The SR weights' `default_steps` (what `--steps` unset resolves to), from their config.json."""
    import json

    folder = Path(sr_weights) if sr_weights else DEFAULT_SR_WEIGHTS
    try:
        return json.loads((folder / "config.json").read_text()).get("default_steps")
    except (OSError, ValueError):
        return None
