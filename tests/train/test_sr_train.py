"""SR training: a tiny 2-worker Ray Train DDP run on a real bundled Sentinel-2 patch, resume, bad data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from pipeline.cli.train import cmd_train_sr
from pipeline.errors import ConfigError, TrainingDataError
from pipeline.models.diffusion import SRConfig, inference_state_dict, load_sr_model
from pipeline.train.launch import LaunchConfig
from pipeline.train.sr import SRTask, SRTrainConfig, train_sr

REPO = Path(__file__).resolve().parents[2]
#: A training patch of SPLIT.md (Austria, 2017-06-13), bundled as 12 GeoTIFFs.
PATCH = REPO / "data" / "samples" / "catalog" / "S2A_MSIL2A_20170613T101031_87_48"

TINY = SRConfig(
    preset="custom",
    rrdb_feat=8,
    rrdb_blocks=1,
    rrdb_grow=8,
    deg_channels=(8, 8, 8, 8, 16, 16),
    moco_queue=32,
    unet_inner=8,
    unet_mults=(1, 2),
    unet_res_blocks=1,
    unet_attn_strides=(2,),
    unet_norm_groups=4,
    unet_kv_dim=8,
    fold=4,
    norm_std=0.75,
)


def test_empty_or_non_image_data_folder_is_a_training_data_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(TrainingDataError, match="no usable training image"):
        cmd_train_sr(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "1"])
    with pytest.raises(TrainingDataError, match="does not exist"):
        cmd_train_sr(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match="unknown SR preset"):
        cmd_train_sr(["--preset", "huge", "--data", str(PATCH), "--out", str(tmp_path / "run")])
    tiny_cfg = SRTrainConfig(
        data=(str(PATCH),), model=TINY, patch=32, init_from=str(REPO / "pipeline" / "weights" / "sr_small")
    )
    with pytest.raises(ConfigError, match="differs"):
        SRTask(tiny_cfg, 1).build_model()


@pytest.mark.slow
def test_two_worker_ddp_sr_training_keeps_ranks_identical_and_resumes(tmp_path):
    run = tmp_path / "run"
    cfg = SRTrainConfig(data=(str(PATCH),), model=TINY, batch_size=2, patch=32, lr=1e-3, noise_max=0.02)
    res = train_sr(cfg, LaunchConfig(run_dir=run, workers=2, steps=3, checkpoint_every=2, log_every=1))
    digests = [p.read_text() for p in sorted((run / "rank_digests").glob("rank*.txt"))]
    assert len(digests) == 2 and digests[0] == digests[1], "ranks (incl. the MoCo queue) diverged under DDP"
    assert res.steps_done == 3
    model = load_sr_model(res.final_checkpoint)
    out = model.super_resolve(
        0.1 * torch.ones(1, 3, 16, 16), steps=2, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    res2 = train_sr(
        cfg, LaunchConfig(run_dir=run, workers=1, steps=4, checkpoint_every=2, log_every=1, resume=True)
    )
    assert res2.steps_done == 4
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (run / "loss_curve.png").is_file()
    # fine-tuning from trained weights starts from exactly those weights
    ft = dataclasses.replace(cfg, init_from=str(res.final_checkpoint))
    task = SRTask(ft, 1)
    start = inference_state_dict(task.build_model())
    final = load_sr_model(res.final_checkpoint).state_dict()
    assert all(torch.equal(start[k], final[k]) for k in start)
