"""Contract of the generic Ray Train DDP launcher (real Ray, real gloo DDP on 2 CPU workers).

The task here is a tiny least-squares fit on seeded random tensors: it only exercises the
launcher (DDP sync, checkpoints, resume, metrics), no imagery is involved.
"""

from __future__ import annotations

import json
import os
import sys
from typing import ClassVar

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray import cloudpickle

from pipeline.errors import ConfigError
from pipeline.models.checkpoint import load_checkpoint
from pipeline.train.launch import LaunchConfig, TrainTask, latest_checkpoint, launch
from pipeline.train.launch_state import EMA

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ToyTask:
    """y = x @ w_true; each rank draws different x (so DDP averaging matters)."""

    ema_decay = 0.9
    find_unused_parameters = False
    description: ClassVar[dict[str, str]] = {"task": "toy"}

    def setup(self, rank, world_size, device):
        self.w_true = torch.arange(4, dtype=torch.float32).view(4, 1)

    def build_model(self):
        torch.manual_seed(0)
        return torch.nn.Linear(4, 1)

    def build_optimizer(self, model):
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        return opt, torch.optim.lr_scheduler.StepLR(opt, 5, 0.5)

    def get_batch(self, step, rank, world_size):
        g = torch.Generator().manual_seed(1000 * step + rank)
        x = torch.randn(8, 4, generator=g)
        return x, x @ self.w_true

    def train_step(self, model, batch, step):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return loss, {"mse_loss": float(loss)}

    def export(self, model):
        return model.state_dict(), {"kind": "toy"}, ["B04"], ["B04"]


@pytest.mark.slow
def test_two_worker_ddp_ranks_agree_and_checkpoints_resume(tmp_path):
    assert isinstance(ToyTask(), TrainTask)
    run = tmp_path / "run"
    res = launch(ToyTask(), LaunchConfig(run_dir=run, workers=2, steps=6, checkpoint_every=3, log_every=2))
    digests = {p.read_text() for p in (run / "rank_digests").glob("rank*.txt")}
    assert len(list((run / "rank_digests").glob("rank*.txt"))) == 2
    assert len(digests) == 1, "DDP ranks ended with different weights"
    assert res.steps_done == 6
    assert latest_checkpoint(run).name == "step_0000006"
    ck = load_checkpoint(res.final_checkpoint, kind="toy")
    assert set(ck.state_dict) == {"weight", "bias"}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6]
    state = torch.load(latest_checkpoint(run) / "train_state.pt", weights_only=False)
    assert torch.equal(ck.state_dict["weight"], state["ema"]["weight"]), "export must hold the EMA weights"
    assert not torch.equal(state["ema"]["weight"], state["model"]["weight"])
    assert (run / "loss_curve.png").stat().st_size > 0

    # a killed run may have logged steps after its last checkpoint: they are dropped on resume
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 7, "loss": 1.0}) + "\n")
    with pytest.raises(ConfigError, match="--resume"):
        launch(ToyTask(), LaunchConfig(run_dir=run, workers=1, steps=8))
    res2 = launch(
        ToyTask(), LaunchConfig(run_dir=run, workers=1, steps=8, checkpoint_every=4, resume=True, log_every=2)
    )
    assert res2.steps_done == 8
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6, 8]
    state = torch.load(latest_checkpoint(run) / "train_state.pt", weights_only=False)
    assert state["step"] == 8 and state["scheduler"]["last_epoch"] == 8


def test_launch_config_rejects_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        LaunchConfig(run_dir=tmp_path, workers=0)
    with pytest.raises(ConfigError, match="steps"):
        LaunchConfig(run_dir=tmp_path, steps=0)


def test_ema_leaves_a_frozen_part_bit_identical():
    """A network that is not trained (its parameters never change) keeps its exact weights in the EMA,
    while a trained one moves: the fusion trainer's --groups relies on it."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"frozen": torch.nn.Linear(8, 8), "trained": torch.nn.Linear(8, 8)})
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = EMA(model, 0.99)
    for _ in range(50):
        with torch.no_grad():
            model["trained"].weight.add_(0.01)
        ema.update(model)
    shadow = ema.state_dict()
    assert all(torch.equal(shadow[k], start[k]) for k in start if k.startswith("frozen."))
    assert not torch.equal(shadow["trained.weight"], start["trained.weight"])
