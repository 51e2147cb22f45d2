"""Wald-protocol training of the three fusion group networks on native Sentinel-2 scenes.

`difffusr train fusion --preset small --data DIR... --workers N --out RUN_DIR [--steps N] [--resume]`

Each step draws, per group, a batch of crops from Wald pairs (pipeline.models.fusion.wald) of the
training scenes and takes one Adam step of that group's network (one optimizer per group, L1 loss on
per-band normalised reflectance, paper IV-C). The pairs are rebuilt with fresh random blur every
`regen_every` steps (blind degradation). Under DDP every rank draws its own crops; rank 0 writes
`RUN_DIR/checkpoint/` (three group checkpoints + train_state.pt) and `RUN_DIR/metrics.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from pipeline.bands import BAND_GROUPS, NATIVE_GSD_M, S2_BANDS
from pipeline.errors import ConfigError, TrainingDataError
from pipeline.models.fusion.config import PRESETS, preset_configs
from pipeline.models.fusion.model import FusionModel, load_fusion_model, save_fusion_model
from pipeline.models.fusion.wald import WaldPair, make_wald_pair, min_scene_size_10m, sample_crops

#: Reflectance = DN / DN_SCALE (L2A without BOA offset, and L1C TOA).
DN_SCALE = 10000.0


@dataclass(frozen=True, kw_only=True)
class FusionTrainConfig:
    """Fusion training job.

    Attributes:
        preset: "small" or "paper" (pipeline.models.fusion.config.PRESETS).
        data: scene folders, each with one GeoTIFF per band named `*B01.tif` ... `*B12.tif` (B8A too).
        out: run folder (checkpoint/, metrics.jsonl, config.json).
        steps: optimizer steps per group.
        batch: crops per group per step and rank.
        crop: crop side in pixels of the group grid (multiple of the trunk stride).
        lr: Adam learning rate (cosine-decayed to lr/20).
        seed: base seed; rank r uses seed + 1000 r.
        regen_every: rebuild the Wald pairs with fresh random blur every this many steps.
        log_every / ckpt_every: steps between metric lines / checkpoints.
        resume: continue from out/checkpoint when it exists.
        bf16: bfloat16 autocast for the forward pass on CPU (about 2x faster here).
        workers: DDP ranks (Ray Train workers); 1 runs in-process.
    """

    preset: str = "small"
    data: tuple[str, ...] = field(default=())
    out: str = "runs/fusion"
    steps: int = 3000
    batch: int = 12
    crop: int = 48
    lr: float = 2e-4
    seed: int = 0
    regen_every: int = 100
    log_every: int = 25
    ckpt_every: int = 250
    resume: bool = False
    bf16: bool = True
    workers: int = 1

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"--preset {self.preset!r} is unknown; choose one of {sorted(PRESETS)}")
        if not self.data:
            raise ConfigError("no training scene given; pass --data DIR (a folder of per-band GeoTIFFs)")
        if self.steps < 1 or self.batch < 1 or self.crop < 8 or self.workers < 1:
            raise ConfigError("--steps, --batch, --workers must be >= 1 and --crop >= 8")
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))


def _band_file(folder: Path, band: str) -> Path:
    hits = sorted(p for p in folder.glob("*.tif") if p.stem.endswith(band) and not p.stem.endswith("_" + band + "_"))
    hits = [p for p in hits if p.stem == band or p.stem.endswith("_" + band)]
    if not hits:
        raise TrainingDataError(f"scene folder '{folder}' has no GeoTIFF for band {band} (expected '*{band}.tif')")
    return hits[0]


def read_scene(folder: str | Path) -> dict[str, torch.Tensor]:
    """Read the 12 bands of a scene, cropped to their common extent on nested 10/20/60 m grids.

    Args:
        folder: one GeoTIFF per band (`B01.tif` or `<name>_B01.tif`); grids may be coarser than native
            as long as the 1:2:6 ratios hold (e.g. the 100/200/600 m Western Sahara tile).

    Returns:
        band -> (1, 1, h_b, w_b) float32 reflectance (DN / 10000); the 10 m side h is a multiple of 6 and
        h_20 = h / 2, h_60 = h / 6.
    """
    import rasterio
    from rasterio.windows import Window

    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"training scene '{folder}' is not a folder; pass --data with scene folders")
    files = {b: _band_file(folder, b) for b in S2_BANDS}
    meta = {}
    for b, f in files.items():
        with rasterio.open(f) as r:
            meta[b] = (r.transform, r.width, r.height)
    r10 = meta["B02"][0].a
    for b, (t, w, h) in meta.items():
        ratio = NATIVE_GSD_M[b] // 10
        if not math.isclose(t.a, r10 * ratio, rel_tol=1e-6) or not math.isclose(-t.e, r10 * ratio, rel_tol=1e-6):
            raise TrainingDataError(f"band {b} of '{folder}' has pixel size {t.a}, expected {r10 * ratio} (1:2:6 ratios)")
    left = max(t.c for t, _, _ in meta.values())
    top = min(t.f for t, _, _ in meta.values())
    right = min(t.c + w * t.a for t, w, _ in meta.values())
    bottom = max(t.f + h * t.e for t, _, h in meta.values())

    def on_all_grids(x: float, y: float) -> bool:
        return all(
            abs(((x - t.c) / t.a) - round((x - t.c) / t.a)) < 1e-6 and abs(((t.f - y) / -t.e) - round((t.f - y) / -t.e)) < 1e-6
            for t, _, _ in meta.values()
        )

    start = next(((left + i * r10, top - j * r10) for i in range(12) for j in range(12)
                  if on_all_grids(left + i * r10, top - j * r10)), None)
    if start is None:
        raise TrainingDataError(f"the band grids of '{folder}' are not nested (no common 60 m pixel corner)")
    x0, y0 = start
    n_w = int((right - x0) // (6 * r10)) * 6
    n_h = int((y0 - bottom) // (6 * r10)) * 6
    if n_w < 6 or n_h < 6:
        raise TrainingDataError(f"the bands of '{folder}' share no common extent")
    out: dict[str, torch.Tensor] = {}
    for b, f in files.items():
        t, _, _ = meta[b]
        k = NATIVE_GSD_M[b] // 10
        col, row = round((x0 - t.c) / t.a), round((t.f - y0) / -t.e)
        with rasterio.open(f) as r:
            a = r.read(1, window=Window(col, row, n_w // k, n_h // k)).astype(np.float32) / DN_SCALE
        if a.shape != (n_h // k, n_w // k):
            raise TrainingDataError(f"band {b} of '{folder}' could not be read on the common grid")
        out[b] = torch.from_numpy(a)[None, None]
    return out


def _crop_to(scene: dict[str, torch.Tensor], mult: int) -> dict[str, torch.Tensor] | None:
    """Crop a scene so the 10 m side is a multiple of `mult`; None when too small."""
    h, w = scene["B02"].shape[-2:]
    h2, w2 = h // mult * mult, w // mult * mult
    if h2 == 0 or w2 == 0:
        return None
    return {b: t[..., : h2 // (NATIVE_GSD_M[b] // 10), : w2 // (NATIVE_GSD_M[b] // 10)] for b, t in scene.items()}


class WaldSampler:
    """Per-group Wald pairs of all scenes, rebuilt with fresh random blur on demand."""

    def __init__(self, scenes: dict[str, dict[str, torch.Tensor]], model: FusionModel, crop: int, generator: torch.Generator):
        self.gen = generator
        self.crop = crop
        self.configs = model.configs
        self.scenes: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        self.weights: dict[str, torch.Tensor] = {}
        for g in BAND_GROUPS:
            cfg = model.configs[g.name]
            usable = {}
            for name, sc in scenes.items():
                c = _crop_to(sc, min_scene_size_10m(cfg))
                if c is not None and min(c["B02"].shape[-2:]) // g.factor_to_10m >= crop:
                    usable[name] = c
            if not usable:
                raise TrainingDataError(f"no training scene is large enough for the {g.name} group at crop {crop}")
            self.scenes[g.name] = usable
            # Scenes drawn with probability ~ sqrt(area): big scenes dominate less, tiny patches are not overused.
            self.weights[g.name] = torch.tensor([math.sqrt(s["B02"].numel()) for s in usable.values()])
        self.pairs: dict[str, list[WaldPair]] = {}
        self.regenerate()

    def regenerate(self) -> None:
        for name, scs in self.scenes.items():
            self.pairs[name] = [make_wald_pair(s, self.configs[name], generator=self.gen) for s in scs.values()]

    def batch(self, group: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.multinomial(self.weights[group], n, replacement=True, generator=self.gen)
        parts = [sample_crops(self.pairs[group][int(i)], self.crop, 1, generator=self.gen) for i in idx]
        return tuple(torch.cat([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]


def _lr_at(cfg: FusionTrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / 50)
    cos = 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
    return cfg.lr * warm * (0.05 + 0.95 * cos)


def train_worker(cfg: FusionTrainConfig, *, report: Callable[[dict[str, Any], Path | None], None] | None = None) -> Path:
    """Per-worker loop body (in-process, or one Ray Train DDP rank when torch.distributed is initialised).

    Returns:
        the run's checkpoint folder (written by rank 0).
    """
    torch.set_num_threads(1)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    out = Path(cfg.out)
    ckpt = out / "checkpoint"
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    start = 0
    if cfg.resume and (ckpt / "train_state.pt").is_file():
        model = load_fusion_model(ckpt).train()
        state = torch.load(ckpt / "train_state.pt", weights_only=False)
        start = int(state["step"])
    else:
        model = FusionModel(preset_configs(cfg.preset)).train()
        state = None
    nets = {g.name: model.nets[g.name] for g in BAND_GROUPS}
    if world > 1:
        nets = {k: torch.nn.parallel.DistributedDataParallel(v) for k, v in nets.items()}
    opts = {k: torch.optim.Adam(v.parameters(), lr=cfg.lr, betas=(0.9, 0.999)) for k, v in nets.items()}
    if state is not None:
        for k, o in opts.items():
            o.load_state_dict(state["optim"][k])
        if rank < len(state.get("gen_states", [])):
            gen.set_state(state["gen_states"][rank])
    scenes = {d: read_scene(d) for d in cfg.data}
    sampler = WaldSampler(scenes, model, cfg.crop, gen)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    t0, acc = time.time(), {k: 0.0 for k in nets}
    for step in range(start, cfg.steps):
        if step > start and step % cfg.regen_every == 0:
            sampler.regenerate()
        for g, net in nets.items():
            ms, gd, tgt = sampler.batch(g, cfg.batch)
            for pg in opts[g].param_groups:
                pg["lr"] = _lr_at(cfg, step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                pred = net(ms, gd)
            loss = (pred.float() - tgt).abs().mean()
            opts[g].zero_grad(set_to_none=True)
            loss.backward()
            opts[g].step()
            acc[g] += float(loss.detach())
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            n = cfg.log_every if done % cfg.log_every == 0 else done % cfg.log_every
            metrics = {"step": done, "rank": rank, "world": world, "lr": _lr_at(cfg, step),
                       "wall_s": round(time.time() - t0, 1), **{f"l1_{k}": v / n for k, v in acc.items()}}
            acc = {k: 0.0 for k in nets}
            saved = None
            if rank == 0 and (done % cfg.ckpt_every == 0 or done == cfg.steps):
                saved = _save(model, opts, gen, done, ckpt, cfg, world)
            if rank == 0:
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(metrics) + "\n")
                print(json.dumps(metrics), flush=True)
            if report is not None:
                report(metrics, saved)
    if world > 1:
        dist.barrier()
    return ckpt


def _save(model: FusionModel, opts: dict, gen: torch.Generator, step: int, ckpt: Path, cfg: FusionTrainConfig, world: int) -> Path:
    """Write model + optimizer state to a temp folder and swap it in (a crash keeps the previous one)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_fusion_model(model, tmp, extra={"preset": cfg.preset, "step": step, "train_data": list(cfg.data)})
    torch.save({"step": step, "optim": {k: o.state_dict() for k, o in opts.items()},
                "gen_states": [gen.get_state()] * world}, tmp / "train_state.pt")
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    shutil.rmtree(old, ignore_errors=True)
    return ckpt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="difffusr train fusion", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="scene folders of per-band GeoTIFFs")
    p.add_argument("--workers", type=int, default=1, help="DDP ranks (Ray Train workers, CPU/gloo)")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--crop", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    return p


def config_from_args(argv: list[str]) -> FusionTrainConfig:
    a = build_parser().parse_args(argv)
    return FusionTrainConfig(preset=a.preset, data=tuple(a.data), out=a.out, steps=a.steps, batch=a.batch,
                             crop=a.crop, lr=a.lr, seed=a.seed, ckpt_every=a.ckpt_every, log_every=a.log_every,
                             resume=a.resume, bf16=a.bf16, workers=a.workers)


def cli_main(argv: list[str]) -> int:
    """`difffusr train fusion ...`; returns the exit code."""
    cfg = config_from_args(argv)
    if cfg.workers == 1:
        train_worker(cfg)
    else:
        from pipeline.train.fusion_ray import run_ray

        run_ray(cfg)
    return 0
