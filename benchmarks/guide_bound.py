"""How good an RGB guide can a CPU-trained network give at Wald x4, and what does it do to the fusion scores?

An upper-bound diagnostic for the fusion issue, not a method of the pipeline: a PSNR-optimal *regression* SR
(RRDB trunk on the LR grid, pixel-shuffle x4, residual over bicubic, then the pipeline's 5-step
back-projection)
trained with L1 on Sentinel-2 RGB Wald pairs made with the evaluation's own sensor model (MTF 0.3, non-blind:
the most favourable case for this protocol). The diffusion SR of the method cannot be expected to beat it in
PSNR. `--score` then runs the shipped fusion nets on Wald x4 scenes with this guide and with bicubic +
back-projection as guide, and prints the guide's RGB PSNR with the fused scores (as fusion_heldout.py).

    .venv/bin/python benchmarks/guide_bound.py --train S2_SCENE_DIR ... [--holdout DIR --holdout-frac 0.2] \
        --minutes 45 --out RUN [--val DIR --row-frac 0.8 1] --score data/samples/heldout/*
    .venv/bin/python benchmarks/guide_bound.py --weights RUN/guide.pt --score data/samples/heldout/*
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fusion_heldout import cut_rows, make_superresolver, run_scenes
from pipeline.eval.metrics import psnr
from pipeline.eval.protocol import crop_for_ratio
from pipeline.eval.resample import degrade
from pipeline.io.scene_files import read_scene
from pipeline.models import baselines
from pipeline.models.fusion import load_fusion_model
from pipeline.models.rrdb import RRDB
from pipeline.models.sensor import backproject, upsample, wald_degrade
from pipeline.train.fusion import holdout_cut
from pipeline.train.scenes import read_training_scene

FACTOR = 4
BP_ITERATIONS = 5


class RegressionGuide(nn.Module):
    """x4 regression SR of (B, 3, h, w) RGB reflectance -> (B, 3, 4h, 4w), consistent with its input.

    Brightness-relative (inputs divided by their mean, so L1C and L2A levels look alike); the learned part
    is a residual over bicubic whose last conv starts at zero, so the untrained net is bicubic +
    back-projection.
    """

    def __init__(self, nf: int = 32, blocks: int = 3) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf, nf // 2) for _ in range(blocks)])
        self.body_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.up = nn.Sequential(
            nn.Conv2d(nf, 4 * nf, 3, 1, 1),
            nn.PixelShuffle(2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(nf, 4 * nf, 3, 1, 1),
            nn.PixelShuffle(2),
            nn.LeakyReLU(0.2),
        )
        self.tail = nn.Conv2d(nf, 3, 3, 1, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        scale = lr.mean((1, 2, 3), keepdim=True).clamp_min(0.01)
        x = lr / scale
        f = self.head(x)
        f = f + self.body_conv(self.body(f))
        y = upsample(x, FACTOR, mode="bicubic") + self.tail(self.up(f))
        return backproject(y * scale, lr, FACTOR, iterations=BP_ITERATIONS)


def bicubic_bp(lr: torch.Tensor) -> torch.Tensor:
    """The no-learning guide: bicubic x4 + the same back-projection."""
    return backproject(upsample(lr, FACTOR, mode="bicubic"), lr, FACTOR, iterations=BP_ITERATIONS)


def training_rgbs(dirs: list[str], holdout: str | None, frac: float) -> list[torch.Tensor]:
    """(3, H, W) native RGB (B04 B03 B02) of each training scene.

    The --holdout scene is cut to its training rows.
    """
    out = []
    for d in dirs:
        sc = read_training_scene(d)
        if holdout is not None and Path(d) == Path(holdout):
            sc = holdout_cut(sc, frac)
        out.append(torch.cat([sc[b] for b in ("B04", "B03", "B02")], 1)[0].nan_to_num())
    return out


def sample_pairs(
    rgbs: list[torch.Tensor], n: int, size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n random (LR, HR) Wald pairs.

    HR: crops of `size` px (flips / turns); LR: the sensor model's x4 degrade.
    """
    weights = torch.tensor([math.sqrt(r[0].numel()) for r in rgbs])
    crops = []
    for i in torch.multinomial(weights, n, replacement=True, generator=gen).tolist():
        r = rgbs[i]
        y = int(torch.randint(0, (r.shape[-2] - size) // FACTOR + 1, (), generator=gen)) * FACTOR
        x = int(torch.randint(0, (r.shape[-1] - size) // FACTOR + 1, (), generator=gen)) * FACTOR
        c = torch.rot90(r[:, y : y + size, x : x + size], int(torch.randint(0, 4, (), generator=gen)), (1, 2))
        crops.append(c.flip(2) if bool(torch.randint(0, 2, (), generator=gen)) else c)
    hr = torch.stack(crops)
    return wald_degrade(hr, FACTOR), hr


def guide_psnr_on(folder: str, guides: dict, row_frac: tuple[float, float] | None = None) -> dict[str, float]:
    """RGB PSNR (peak 1) of each guide on one scene's Wald x4 RGB, as fusion_heldout.py scores guides."""
    sc = read_scene(folder)
    sc = crop_for_ratio(cut_rows(sc, *row_frac) if row_frac else sc, FACTOR)
    native = baselines.rgb_of(torch.from_numpy(np.nan_to_num(sc.b10))[None]).numpy()
    lr = baselines.rgb_of(torch.from_numpy(np.nan_to_num(degrade(sc.b10, FACTOR)))[None])
    with torch.no_grad():
        return {k: psnr(g(lr).numpy(), native) for k, g in guides.items()}


def train(a: argparse.Namespace) -> RegressionGuide:
    rgbs = training_rgbs(a.train, a.holdout, a.holdout_frac)
    model = RegressionGuide(a.nf, a.blocks)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    history, t0, step, next_val = [], time.time(), 0, 0.0
    while step < a.steps and time.time() - t0 < a.minutes * 60:
        lr, hr = sample_pairs(rgbs, a.batch, a.crop, gen)
        loss = ((model(lr) - hr).abs() / lr.mean((1, 2, 3), keepdim=True).clamp_min(0.01)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if a.val and (time.time() - t0 >= next_val or step == a.steps):
            next_val += a.val_every_s
            model.eval()
            row = {
                "step": step,
                "seconds": round(time.time() - t0, 1),
                "loss": float(loss.detach()),
                **guide_psnr_on(a.val, {"bicubic_bp": bicubic_bp, "regression": model}, tuple(a.row_frac)),
            }
            model.train()
            history.append(row)
            print(json.dumps(row), flush=True)
    torch.save(model.state_dict(), out / "guide.pt")
    (out / "history.json").write_text(
        json.dumps(
            {"nf": a.nf, "blocks": a.blocks, "steps": step, "seconds": time.time() - t0, "history": history},
            indent=1,
        )
    )
    print(f"trained {step} steps in {time.time() - t0:.0f} s -> {out / 'guide.pt'}")
    return model.eval()


def score(model: nn.Module, scenes: list[str]) -> dict:
    """Wald x4 of the shipped fusion nets with each guide: guide RGB PSNR and fused scores, mean of scenes."""
    guides = {"bicubic+bp": bicubic_bp, "regression": model}
    methods = {name: f"fusion[{name}]" for name in guides}
    native: dict[str, torch.Tensor] = {}
    gpsnr: dict[str, list[float]] = {}
    sres = make_superresolver(
        load_fusion_model(None), None, 0, native=native, guide_psnr=gpsnr, guides=guides
    )
    with torch.no_grad():
        results = run_scenes(scenes, list(methods.values()), sres, native)
    per_scene = {
        r.scene: {
            name: {
                "guide_psnr": gpsnr[m][i],
                **{
                    f"{g}_{k}": r.methods[m].groups[g][k]
                    for g in ("10m", "20m", "60m", "all")
                    for k in ("psnr", "ergas")
                },
            }
            for name, m in methods.items()
        }
        for i, r in enumerate(results)
    }
    mean = {
        m: {
            k: float(np.mean([s[m][k] for s in per_scene.values()]))
            for k in next(iter(per_scene.values()))[m]
        }
        for m in guides
    }
    print("| guide | guide RGB PSNR | 10m PSNR | 10m ERGAS | 20m ERGAS | 60m ERGAS | 12-band ERGAS |")
    print("|---|---|---|---|---|---|---|")
    for m, v in mean.items():
        print(
            f"| {m} | {v['guide_psnr']:.2f} | {v['10m_psnr']:.2f} | {v['10m_ergas']:.3f} "
            f"| {v['20m_ergas']:.3f} "
            f"| {v['60m_ergas']:.3f} | {v['all_ergas']:.3f} |"
        )
    return {"mean": mean, "per_scene": per_scene}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", nargs="+", default=[], metavar="DIR", help="training scenes (12-band folders)")
    p.add_argument("--holdout", default=None, help="a --train scene whose last --holdout-frac rows stay out")
    p.add_argument("--holdout-frac", type=float, default=0.2)
    p.add_argument("--weights", default=None, help="score a trained guide.pt instead of training")
    p.add_argument("--out", default="runs/guide_bound")
    p.add_argument("--minutes", type=float, default=45.0)
    p.add_argument("--steps", type=int, default=10**9)
    p.add_argument("--nf", type=int, default=32)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=64, help="HR crop side (multiple of 4)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val", default=None, help="scene for the periodic validation guide PSNR")
    p.add_argument("--row-frac", nargs=2, type=float, default=[0.8, 1.0], metavar=("A", "B"))
    p.add_argument("--val-every-s", type=float, default=300.0)
    p.add_argument(
        "--score", nargs="*", default=[], metavar="DIR", help="Wald x4 scenes to score the fusion on"
    )
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.weights:
        model = RegressionGuide(a.nf, a.blocks)
        model.load_state_dict(torch.load(a.weights, weights_only=True))
        model.eval()
    elif a.train:
        model = train(a)
    else:
        p.error("give --train scenes or --weights")
    if a.score:
        res = score(model, a.score)
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
