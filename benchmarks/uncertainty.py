"""Does the `--uncertainty` spread rank the errors? And what do K draws cost?

On each held-out scene (Wald x4, as `pipeline.eval.protocol`: every band degraded by 4 with the sensor model,
super-resolved x4, scored at its native grid), the learned method runs with K = 1, 2, 4 draws per tile
(`inference.scene.super_resolve_scene_full`, all K draws of a tile in one forward pass). For the largest K:

- Pearson and Spearman correlation between the per-pixel spread and the actual |error| (per band group,
  pooled over the group's bands and the scenes);
- mean |error| of the 10 % most and the 10 % least uncertain pixels, and their ratio.

The 10 m group is compared pixel for pixel (Wald x4 output = the native 10 m grid); the 20/60 m groups are
compared on their native grid, the SR and its spread brought there by the sensor model's block mean (the
spread of a block mean is not the block mean of the spread: an approximation, noted in the output).
Cost: wall seconds per tile of the scene call vs K (one CPU thread unless --threads).

    nice -n 19 .venv/bin/python -m benchmarks.uncertainty --scenes data/samples/heldout/* [--draws 1 2 4] \
        [--steps N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from pipeline.bands import BAND_GROUPS
from pipeline.eval.protocol import crop_for_ratio, group_bands
from pipeline.eval.resample import degrade
from pipeline.inference.methods import MethodOptions, get_method
from pipeline.inference.scene import super_resolve_scene_full
from pipeline.io.scene_files import read_scene
from pipeline.tiling.grid import SR_FACTOR

RATIO = 4


def decile_errors(spread: np.ndarray, error: np.ndarray, share: float = 0.1) -> dict[str, float]:
    """Mean |error| of the `share` most and least uncertain pixels (ties broken by position)."""
    order = np.argsort(spread, kind="stable")
    n = max(1, round(share * order.size))
    low, high = error[order[:n]].mean(), error[order[-n:]].mean()
    return {"err_least_uncertain": float(low), "err_most_uncertain": float(high), "ratio": float(high / low)}


def ranking(spread: np.ndarray, error: np.ndarray) -> dict[str, float]:
    """Correlations and decile errors of flat arrays of valid pixels."""
    return {
        "pixels": int(spread.size),
        "pearson": float(stats.pearsonr(spread, error)[0]),
        "spearman": float(stats.spearmanr(spread, error)[0]),
        **decile_errors(spread, error),
        "mean_error": float(error.mean()),
        "mean_spread": float(spread.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", nargs="+", required=True)
    p.add_argument("--draws", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the weights' default)")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    draws = sorted(set(args.draws))
    methods = {
        k: get_method("difffusr", MethodOptions(steps=args.steps, precision=args.precision, uncertainty=k))
        for k in draws
    }
    kmax = draws[-1]
    pooled: dict[str, tuple[list, list]] = {g.name: ([], []) for g in BAND_GROUPS}
    per_scene: dict[str, dict] = {}
    cost: dict[int, list[float]] = {k: [] for k in draws}
    for folder in args.scenes:
        scene = crop_for_ratio(read_scene(folder), RATIO)
        ref = {g.name: arr for g, arr in zip(BAND_GROUPS, scene.groups, strict=True)}
        lr = [degrade(arr, RATIO) for arr in scene.groups]
        # warm-up: the first call of a shape pays oneDNN's kernel selection
        super_resolve_scene_full(*lr, methods[draws[0]], seed=args.seed)
        tiles = None
        results = {}
        for k in draws:
            counted = []
            t0 = time.perf_counter()
            results[k] = super_resolve_scene_full(
                *lr,
                methods[k],
                seed=args.seed,
                options=MethodOptions(uncertainty=k),
                on_tile=lambda done, total, c=counted: c.append(total),
            )
            tiles = counted[-1]
            cost[k].append((time.perf_counter() - t0) / tiles)
        product, spread = results[kmax]
        scene_doc = {"tiles": tiles, "lr_shape10": list(lr[0].shape[-2:])}
        for group in BAND_GROUPS:
            f = (SR_FACTOR // RATIO) * group.factor_to_10m
            sr_g = degrade(group_bands(product, group), f)
            sp_g = degrade(group_bands(spread, group), f) if f > 1 else group_bands(spread, group)
            err = np.abs(sr_g - ref[group.name])
            ok = np.isfinite(err) & np.isfinite(sp_g)
            pooled[group.name][0].append(sp_g[ok])
            pooled[group.name][1].append(err[ok])
            scene_doc[group.name] = ranking(sp_g[ok], err[ok])
        per_scene[Path(folder).name] = scene_doc
        print(f"{Path(folder).name}: {json.dumps(scene_doc)}", file=sys.stderr)
    doc = {
        "protocol": f"Wald x{RATIO}, held-out scenes, K = {kmax} draws for the ranking",
        "steps": methods[kmax].steps,
        "precision": args.precision,
        "ranking": {
            name: ranking(np.concatenate(s), np.concatenate(e)) for name, (s, e) in pooled.items() if s
        },
        "per_scene": per_scene,
        "cost_s_per_tile": {str(k): float(np.mean(v)) for k, v in cost.items()},
        "cost_vs_k1": {str(k): float(np.mean(v) / np.mean(cost[draws[0]])) for k, v in cost.items()},
        "threads": args.threads,
        "note": "20/60 m: spread and SR block-averaged to the native grid (an approximation of the spread)",
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
