"""Run-folder state of `pipeline.train.launch`: EMA of the weights, atomic checkpoints, metrics plot, digests.

Split out of launch.py (which re-exports these names) to keep the launcher readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pipeline.models.checkpoint import save_checkpoint

TRAIN_STATE_FILE = "train_state.pt"


# ----------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of a module's floating-point state (params and float buffers).

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so a short
    run's EMA is not dominated by the random initial weights. Integer buffers (e.g. BatchNorm
    counters, queue pointers) are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                avg = s.mul(d).add_(v.detach(), alpha=1.0 - d)
                # d s + (1 - d) s = s, but not in floating point: a frozen network (`train fusion --groups
                # 10m 20m` leaves the 60 m net alone) drifted by ~1 ulp per update and was exported different
                # from its start. Equal elements keep their value; per element and without a host sync
                # (a whole-tensor torch.equal would block on every tensor of a GPU model at every step).
                s.copy_(torch.where(s == v, s, avg))
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int = 10**9) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.updates = updates


# ----------------------------------------------------------------------------- run folder helpers


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Folder of the newest complete checkpoint of a run, or None."""
    marker = Path(run_dir) / "checkpoints" / "LATEST"
    if not marker.is_file():
        return None
    folder = marker.parent / marker.read_text().strip()
    return folder if (folder / TRAIN_STATE_FILE).is_file() else None


def _write_checkpoint(run_dir: Path, step: int, exported: tuple, train_state: dict[str, Any]) -> Path:
    """Write checkpoints/step_N atomically, then point LATEST at it and drop older ones (keep 2)."""
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=ckdir))
    state_dict, config, in_bands, out_bands = exported
    save_checkpoint(tmp / "c", state_dict, config=config, input_bands=in_bands, output_bands=out_bands)
    torch.save(train_state, tmp / "c" / TRAIN_STATE_FILE)
    final = ckdir / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp / "c", final)
    shutil.rmtree(tmp, ignore_errors=True)
    (ckdir / "LATEST.tmp").write_text(name)
    os.replace(ckdir / "LATEST.tmp", ckdir / "LATEST")
    olds = sorted(p for p in ckdir.glob("step_*") if p.is_dir() and p.name != name)
    for p in olds[:-1]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path) -> None:
    """Plot every numeric metric whose name contains 'loss' against step (last value per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[int, dict[str, float]] = {}
    for line in Path(metrics_path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            rows[int(rec["step"])] = rec
    if not rows:
        return
    steps = sorted(rows)
    keys = sorted(
        {k for r in rows.values() for k, v in r.items() if "loss" in k and isinstance(v, (int, float))}
    )
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for k in keys:
        xs = [s for s in steps if k in rows[s]]
        ax.plot(xs, [rows[s][k] for s in xs], label=k, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state_dict's names and raw bytes (to compare ranks)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
