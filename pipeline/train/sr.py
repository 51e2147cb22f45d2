"""Training of the blind diffusion SR model (DiffFuSR stage 1) on synthetic pairs, via Ray Train DDP.

`difffusr train sr --preset small --data DIR... --workers N --out RUN_DIR [--steps N] [--resume]`

Each step draws, per rank, a batch of HR RGB patches from the --data folders (NAIP-like HR RGB
harmonised by eq. 9, and Sentinel-2 10 m RGB), degrades each with its own random anisotropic
21x21 Gaussian blur, bicubic x1/4 and Gaussian noise (eq. 10-11), plus a second crop of the same
source with the same degradation (the MoCo positive), and minimises eq. (8):
L1 on the x0 prediction + L1 of the RRDB decoder's coarse HR + lambda * InfoNCE.
The MoCo queue is kept identical on every rank: keys are all-gathered before they are enqueued.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import torch

from pipeline.bands import RGB_BANDS
from pipeline.errors import ConfigError
from pipeline.models.degradation import DegradationRanges
from pipeline.models.diffusion.config import SRConfig
from pipeline.models.diffusion.model import SRDiffusion, inference_state_dict, load_sr_model
from pipeline.train.hr_data import discover_sources, sample_pairs
from pipeline.train.launch import LaunchConfig, LaunchResult, launch


@dataclasses.dataclass(frozen=True, kw_only=True)
class SRTrainConfig:
    """Optimisation and data options of SR training.

    Attributes:
        data: folders with HR sources (see `pipeline.train.hr_data`).
        model: the network config (a preset, possibly modified).
        batch_size: patches per rank per step.
        patch: HR patch side in pixels (LR = patch / 4).
        lr: Adam learning rate (betas 0.9, 0.999).
        lr_milestones: fractions of the run at which the rate is halved (paper: 0.2, 0.4, 0.6, 0.8).
        contrast_weight: lambda of eq. (8).
        ema_decay: EMA decay of the weights (0.999).
        noise_max: upper end of the LR noise std-dev (reflectance units; paper 25/255).
        seed: base seed; batches are a function of (seed, step, rank) so a resumed run repeats them.
        init_from: start from these SR weights (a folder from `train sr` or `convert-checkpoint`,
            e.g. the authors' converted paper checkpoint to fine-tune on your own HR data); the
            training-only parts (MoCo key encoder, queue, projection head) start fresh.
    """

    data: tuple[str, ...]
    model: SRConfig
    batch_size: int = 8
    patch: int = 64
    lr: float = 1e-4
    lr_milestones: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    contrast_weight: float = 0.01
    ema_decay: float = 0.999
    noise_max: float = 25.0 / 255.0
    seed: int = 0
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.patch % (4 * self.model.pad_multiple):
            raise ConfigError(
                f"--patch must be a multiple of {4 * self.model.pad_multiple}, got {self.patch}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")


class SRTask:
    """`TrainTask` for the diffusion SR model (see pipeline.train.launch)."""

    find_unused_parameters = False

    def __init__(self, cfg: SRTrainConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.ema_decay = cfg.ema_decay
        self.description = {"task": "sr", "config": dataclasses.asdict(cfg)}
        self._ranges = DegradationRanges(noise_sigma=(0.0, cfg.noise_max), anisotropic=True)

    def setup(self, rank: int, world_size: int, device: torch.device) -> None:
        self.sources = discover_sources(list(self.cfg.data), self.cfg.patch)
        self.device = device

    def build_model(self) -> torch.nn.Module:
        torch.manual_seed(self.cfg.seed)  # same initial weights on every rank (DDP also broadcasts)
        model = SRDiffusion(self.cfg.model)
        if self.cfg.init_from:
            src = load_sr_model(self.cfg.init_from)
            if src.config.to_json() | {"preset": ""} != self.cfg.model.to_json() | {"preset": ""}:
                raise ConfigError(
                    f"--init-from '{self.cfg.init_from}' holds a {src.config.preset!r} network "
                    "that differs from the "
                    f"requested {self.cfg.model.preset!r} one; drop --preset or pick matching weights"
                )
            model.load_state_dict(inference_state_dict(src), strict=False)
            model.E.encoder_k.load_state_dict(model.E.encoder_q.state_dict())
        return model

    def build_optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        opt = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad], lr=self.cfg.lr, betas=(0.9, 0.999)
        )
        milestones = sorted({max(1, int(f * self.total_steps)) for f in self.cfg.lr_milestones})
        return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.5)

    def _generator(self, step: int, rank: int) -> torch.Generator:
        digest = hashlib.sha256(f"{self.cfg.seed}/{step}/{rank}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

    def get_batch(self, step: int, rank: int, world_size: int) -> dict[str, torch.Tensor]:
        g = self._generator(step, rank)
        pb = sample_pairs(self.sources, self.cfg.batch_size, self.cfg.patch, self._ranges, g)
        b = pb.hr.shape[0]
        return {
            "hr": pb.hr,
            "lr": pb.lr,
            "lr_key": pb.lr_key,
            "noise": torch.randn(pb.hr.shape, generator=g),
            "u": torch.rand(b, generator=g),
            "t": torch.randint(1, self.cfg.model.timesteps + 1, (b,), generator=g),
        }

    def train_step(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        core: SRDiffusion = model.module if hasattr(model, "module") else model  # type: ignore[assignment]
        dev = self.device
        sched = core.schedule
        level = sched.training_levels(batch["t"], batch["u"]).to(dev)
        loss, parts = model(
            core.normalize(batch["hr"].to(dev)),
            core.normalize(batch["lr"].to(dev)),
            core.normalize(batch["lr_key"].to(dev)),
            level,
            batch["noise"].to(dev),
            self.cfg.contrast_weight,
        )
        return loss, {f"{k}_loss": float(v) for k, v in parts.items()}

    def export(
        self, model: torch.nn.Module
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str], list[str]]:
        core: SRDiffusion = model  # type: ignore[assignment]
        return inference_state_dict(core), core.config.to_json(), list(RGB_BANDS), list(RGB_BANDS)


def train_sr(cfg: SRTrainConfig, launch_cfg: LaunchConfig) -> LaunchResult:
    """Check the data (and --init-from) on the driver, then launch Ray Train.

    Checking on the driver fails fast, with a clear message.
    """
    discover_sources(list(cfg.data), cfg.patch)
    if cfg.init_from:
        SRTask(cfg, launch_cfg.steps).build_model()
    return launch(SRTask(cfg, launch_cfg.steps), launch_cfg)
