"""Generic Ray Train (DDP) launcher shared by every training task (diffusion SR, fusion).

The launcher owns everything that is not task maths: starting Ray, one `TorchTrainer` with
`num_workers` DDP ranks (gloo on CPU, nccl on GPU), the DDP wrapper, an EMA copy of the weights,
checkpoints every K steps, resuming a killed run from its last checkpoint, metrics as JSON lines
and a loss-curve PNG. A task plugs in by implementing the small `TrainTask` protocol below; the
object must be picklable (it travels to every worker), so keep heavy state (data, model) out of
`__init__` and build it in `setup`/`build_model`.

Run-folder layout (`run_dir`, must be on a filesystem every worker sees: local for one node,
shared/NFS for several)::

    run_dir/
      launch.json                  resolved LaunchConfig + task description
      metrics.jsonl                one JSON object per logged step (rank 0), {"step", "loss", ...}
      loss_curve.png               loss vs step, rewritten at every checkpoint and at the end
      checkpoints/LATEST           name of the newest complete checkpoint folder
      checkpoints/step_000200/     model.safetensors + config.json + bands.json (the project format,
                                   see pipeline.models.checkpoint; holds the *exported* weights,
                                   i.e. the EMA weights when EMA is on) + train_state.pt (raw model,
                                   EMA, optimizer, scheduler, step: everything needed to resume)
      final/                       the last exported checkpoint (same format, no train_state.pt)
      rank_digests/rank{r}.txt     SHA-256 of each rank's final raw weights (ranks must agree)

A checkpoint folder is written under a temporary name and renamed into place before LATEST is
updated, so a run killed at any moment resumes from a complete checkpoint.

Usage (what a task-specific module such as `pipeline/train/sr.py` does)::

    from pipeline.train.launch import LaunchConfig, TrainTask, launch

    class MyTask:                                   # satisfies TrainTask
        ema_decay = 0.999                           # 0 disables EMA
        find_unused_parameters = False              # DDP flag
        description = {"task": "my_task"}           # written into launch.json

        def __init__(self, data_dirs, seed):        # cheap, picklable
            self.data_dirs, self.seed = data_dirs, seed

        def setup(self, rank, world_size, device):  # runs once per worker: load data here
            self.images = load_images(self.data_dirs)
            self.device = device

        def build_model(self):                      # full trainable module (DDP wraps it)
            return MyNet()

        def build_optimizer(self, model):           # -> (optimizer, lr scheduler or None)
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            return opt, torch.optim.lr_scheduler.StepLR(opt, 1000, 0.5)

        def get_batch(self, step, rank, world_size):  # deterministic in (seed, step, rank)
            g = torch.Generator().manual_seed(hash((self.seed, step, rank)) % 2**63)
            return sample_batch(self.images, g)

        def train_step(self, model, batch, step):   # model may be DDP-wrapped: call model(...)
            loss = (model(batch["x"]) - batch["y"]).abs().mean()
            return loss, {"l1": float(loss)}        # launcher does backward/step/EMA

        def export(self, model):                    # unwrapped module (EMA weights loaded)
            return model.state_dict(), {"kind": "my_kind", ...}, ["B04"], ["B04"]

    result = launch(MyTask(["/data/a"], seed=0),
                    LaunchConfig(run_dir="runs/x", workers=2, steps=1000, checkpoint_every=100))
    print(result.final_checkpoint)                  # runs/x/final

The task class must be importable on the Ray workers (a module of the `pipeline` package is);
for a class defined in a test or script, call `ray.cloudpickle.register_pickle_by_value(module)`
first. Ray is started locally (`num_cpus = workers * cpus_per_worker`) unless it already runs or
`ray_address` is given; set RAY_AUTH_MODE=disabled in tests.

MoCo-style queues and other buffers: DDP broadcasts buffers from rank 0 before each forward
(`broadcast_buffers=True`), so a queue that every rank updates with all-gathered keys stays identical.

Kill the process at any time and call `launch(..., LaunchConfig(..., resume=True))`: training
continues from `checkpoints/LATEST` with the same optimizer, EMA and step counter.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from pipeline.errors import ConfigError
from pipeline.models.checkpoint import save_checkpoint
from pipeline.train.launch_state import (
    EMA,
    TRAIN_STATE_FILE,
    _write_checkpoint,
    latest_checkpoint,
    plot_loss_curve,
    state_digest,
)


@runtime_checkable
class TrainTask(Protocol):
    """What a task-specific training loop supplies to `launch` (see the module docstring)."""

    ema_decay: float
    find_unused_parameters: bool
    description: dict[str, Any]

    def setup(self, rank: int, world_size: int, device: torch.device) -> None: ...

    def build_model(self) -> torch.nn.Module: ...

    def build_optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]: ...

    def get_batch(self, step: int, rank: int, world_size: int) -> Any: ...

    def train_step(
        self, model: torch.nn.Module, batch: Any, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]: ...

    def export(
        self, model: torch.nn.Module
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str], list[str]]: ...


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """How to run a training task.

    Attributes:
        run_dir: output folder (created); see the module docstring for its layout.
        workers: number of DDP ranks (Ray Train workers), >= 1.
        gpus_per_worker: GPUs per rank; 0 trains on CPU with gloo, > 0 on CUDA with nccl.
        cpus_per_worker: CPU cores reserved per rank in Ray.
        threads_per_worker: torch intra-op threads per rank (1 on a shared CPU machine).
        steps: total optimisation steps (per rank; the global batch is workers x task batch).
        checkpoint_every: write a checkpoint every this many steps (and at the end).
        log_every: append a metrics line every this many steps.
        resume: continue from `run_dir/checkpoints/LATEST`; without it an existing checkpoint
            in `run_dir` is an error (so a finished run is never silently overwritten).
        grad_clip: clip the global gradient norm to this value; 0 disables.
        max_failures: how many times Ray restarts crashed workers (they resume from LATEST).
        ray_address: address of an existing Ray cluster; None starts a local one if needed.
    """

    run_dir: str | Path
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads_per_worker: int = 1
    steps: int = 1000
    checkpoint_every: int = 200
    log_every: int = 10
    resume: bool = False
    grad_clip: float = 1.0
    max_failures: int = 0
    ray_address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("checkpoint_every and log_every must be >= 1")


@dataclass(frozen=True, kw_only=True)
class LaunchResult:
    """What `launch` returns.

    Attributes:
        run_dir: the run folder.
        final_checkpoint: folder of the exported final weights (project checkpoint format).
        steps_done: optimisation steps completed in total (including before a resume).
        wall_s: wall-clock seconds of this launch call.
    """

    run_dir: Path
    final_checkpoint: Path
    steps_done: int
    wall_s: float


# ----------------------------------------------------------------------------- worker loop


def _worker_loop(cfg: dict[str, Any]) -> None:
    """Body of every Ray Train worker: DDP setup, resume, steps, EMA, checkpoints, metrics."""
    import ray.train
    import torch.distributed as dist

    task = cfg["task"]
    lc: LaunchConfig = cfg["launch"]
    run_dir = Path(cfg["run_dir"])
    torch.set_num_threads(lc.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if lc.gpus_per_worker > 0 and torch.cuda.is_available():
        import ray.train.torch as rtt

        device = rtt.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    task.setup(rank, world, device)
    model = task.build_model().to(device)
    optimizer, scheduler = task.build_optimizer(model)
    ema = EMA(model, task.ema_decay) if task.ema_decay > 0 else None

    start = 0
    ck = latest_checkpoint(run_dir)
    if ck is not None:
        st = torch.load(ck / TRAIN_STATE_FILE, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        if scheduler is not None and st.get("scheduler") is not None:
            scheduler.load_state_dict(st["scheduler"])
        if ema is not None and st.get("ema") is not None:
            ema.load_state_dict(st["ema"], updates=int(st["step"]))
        start = int(st["step"])

    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    if distributed:
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        net: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=task.find_unused_parameters, **ddp_kw
        )
    else:
        net = model

    def export_state() -> tuple:
        if ema is None:
            return task.export(model)
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(ema.state_dict())
        try:
            sd, config, in_bands, out_bands = task.export(model)
            # clone: a state_dict shares storage with the parameters, which are restored below
            return {k: v.detach().clone() for k, v in sd.items()}, config, in_bands, out_bands
        finally:
            model.load_state_dict(raw)

    def save(step: int) -> None:
        if rank == 0:
            exported = export_state()
            state = {
                "step": step,
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "launch": asdict(lc),
            }
            _write_checkpoint(run_dir, step, exported, state)
            if (run_dir / "metrics.jsonl").is_file():
                plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png")
        if distributed:
            dist.barrier()

    if rank == 0 and start > 0 and (run_dir / "metrics.jsonl").is_file():
        # a killed run may have logged steps after its last checkpoint: drop them, they are redone
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= start]
        (run_dir / "metrics.jsonl").write_text("".join(ln + "\n" for ln in kept))
    t0 = time.time()
    model.train()
    for step in range(start, lc.steps):
        batch = task.get_batch(step, rank, world)
        loss, extra = task.train_step(net, batch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = (
            float(torch.nn.utils.clip_grad_norm_(model.parameters(), lc.grad_clip))
            if lc.grad_clip > 0
            else 0.0
        )
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        done = step + 1
        if done % lc.log_every == 0 or done == lc.steps:
            rec = {
                "step": done,
                "loss": float(loss.detach()),
                "grad_norm": gnorm,
                "lr": optimizer.param_groups[0]["lr"],
                "elapsed_s": round(time.time() - t0, 2),
                **extra,
            }
            if rank == 0:
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
            ray.train.report(rec)
        if done % lc.checkpoint_every == 0 or done == lc.steps:
            save(done)

    if distributed:
        # DDP broadcasts rank 0's buffers before every forward; do it once more after the last step
        # so per-rank BatchNorm running statistics agree in the final state as well.
        for buf in model.buffers():
            dist.broadcast(buf, 0)
    digests = run_dir / "rank_digests"
    digests.mkdir(exist_ok=True)
    (digests / f"rank{rank}.txt").write_text(state_digest(model.state_dict()))
    if rank == 0:
        state_dict, config, in_bands, out_bands = export_state()
        save_checkpoint(
            run_dir / "final", state_dict, config=config, input_bands=in_bands, output_bands=out_bands
        )
        if (run_dir / "metrics.jsonl").is_file():
            plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png")
    if distributed:
        dist.barrier()


# ----------------------------------------------------------------------------- driver


def launch(task: TrainTask, config: LaunchConfig) -> LaunchResult:
    """Train `task` with Ray Train DDP as described by `config` (blocking).

    Args:
        task: a picklable object implementing `TrainTask`.
        config: run folder, number of workers, steps, checkpoint cadence, resume flag.

    Returns:
        LaunchResult with the final exported checkpoint folder.

    Raises:
        ConfigError: the run folder already holds checkpoints and `resume` is False, or
            `gpus_per_worker` > 0 on a machine without CUDA.
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.cluster.runtime import start_ray

    if not isinstance(task, TrainTask):
        raise TypeError(f"{type(task).__name__} does not implement pipeline.train.launch.TrainTask")
    run_dir = Path(config.run_dir).resolve()
    existing = latest_checkpoint(run_dir)
    if existing is not None and not config.resume:
        raise ConfigError(
            f"run folder '{run_dir}' already holds checkpoint '{existing.name}'; "
            "pass --resume to continue it or choose another --out folder"
        )
    if existing is None and not config.resume and run_dir.exists():
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "rank_digests", ignore_errors=True)
    use_gpu = config.gpus_per_worker > 0
    if use_gpu and not torch.cuda.is_available():
        raise ConfigError(
            f"--gpus-per-worker {config.gpus_per_worker} asked for CUDA but torch sees no GPU here; "
            "drop the option to train on CPU"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "launch.json").write_text(
        json.dumps(
            {"launch": asdict(config) | {"run_dir": str(run_dir)}, "task": task.description},
            indent=2,
            default=str,
        )
    )
    started_ray = start_ray(
        config.ray_address,
        num_cpus=max(1, int(config.workers * config.cpus_per_worker)),
        log_to_driver=True,
        dashboard=True,
    )
    t0 = time.time()
    try:
        resources = {"CPU": config.cpus_per_worker}
        if use_gpu:
            resources["GPU"] = config.gpus_per_worker
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"task": task, "launch": config, "run_dir": str(run_dir)},
            scaling_config=ScalingConfig(
                num_workers=config.workers, use_gpu=use_gpu, resources_per_worker=resources
            ),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(
                storage_path=str(run_dir / "ray_results"),
                name="train",
                failure_config=FailureConfig(max_failures=config.max_failures),
            ),
        )
        result = trainer.fit()
        if result.error is not None:
            raise result.error
    finally:
        if started_ray:
            ray.shutdown()
    ck = latest_checkpoint(run_dir)
    steps_done = int(ck.name.split("_")[1]) if ck is not None else 0
    return LaunchResult(
        run_dir=run_dir, final_checkpoint=run_dir / "final", steps_done=steps_done, wall_s=time.time() - t0
    )
