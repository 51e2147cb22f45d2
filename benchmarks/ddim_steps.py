"""Sampling steps vs time and fidelity: DiffFuSR with 1, 4, 10, 20, 50 DDIM steps, Wald x4 on held-out
scenes, and the default step count of the weights that this measurement justifies.

For each step count the whole method (diffusion SR of the RGB + fusion of the 12 bands) super-resolves the
x4-degraded held-out scenes (`pipeline.eval.protocol.wald_scene`), and the scores at the native grids are
reported with the wall time, as the mean over the scenes (`rows`) and per scene (`per_scene`); bicubic and
Gram-Schmidt are run once as references.

The rule for the weights' `default_steps` (`pick_default_steps`): the fewest steps whose mean held-out 10 m
PSNR is within 0.05 dB of the 20-step run and whose 12-band ERGAS is within 1 % of it.

    python -m benchmarks.ddim_steps --scene data/samples/heldout/* \\
        --steps 1,2,3,4,6,10,20,50 --json benchmarks/results/ddim_steps.json
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import machine, write_json

BASELINES = ("bicubic", "gs")
#: The reference step count of the rule, and its tolerances (10 m PSNR dB, relative 12-band ERGAS).
REFERENCE_STEPS = 20
PSNR_TOL_DB = 0.05
ERGAS_TOL_REL = 0.01


def _row(label: str, mr) -> dict:
    return {
        "label": label,
        "seconds": mr.seconds,
        **{
            f"{g}_{k}": mr.groups[g][k]
            for g in ("10m", "20m", "60m", "all")
            for k in ("psnr", "ssim", "ergas")
        },
        "10m_sam_deg": mr.groups["10m"]["sam_deg"],
        **{f"10m_{k}": mr.opensr["10m"][k] for k in ("hallucination", "omission", "improvement")},
    }


def _mean(rows: list[dict]) -> dict:
    """The scenes' rows of one method averaged key by key (label and steps kept)."""
    out = dict(rows[0])
    for k, v in rows[0].items():
        if isinstance(v, float):
            out[k] = statistics.fmean(r[k] for r in rows)
    return out


def pick_default_steps(rows: list[dict], *, reference: int = REFERENCE_STEPS) -> int | None:
    """The fewest steps within PSNR_TOL_DB (10 m PSNR) and ERGAS_TOL_REL (12-band ERGAS) of `reference`.

    Args:
        rows: mean rows of `sweep` (the difffusr rows carry "steps").
        reference: the step count the others are compared to; it must be among the rows.

    Returns:
        The step count, or None when the reference step count was not run.
    """
    runs = {r["steps"]: r for r in rows if "steps" in r}
    if reference not in runs:
        return None
    ref = runs[reference]
    ok = [
        n
        for n, r in runs.items()
        if abs(r["10m_psnr"] - ref["10m_psnr"]) <= PSNR_TOL_DB
        and abs(r["all_ergas"] - ref["all_ergas"]) <= ERGAS_TOL_REL * ref["all_ergas"]
    ]
    return min(ok)


def sweep(
    scene_dirs: list[str],
    steps: list[int],
    *,
    sr_weights: str | None = None,
    fusion_weights: str | None = None,
    precision: str = "fp32",
    crop: int | None = None,
    seed: int = 0,
    baselines: tuple[str, ...] = BASELINES,
) -> dict:
    """Wald x4 scores and wall time per DDIM step count (and for the baselines), mean over the scenes."""
    from pipeline.config import MethodOptions
    from pipeline.eval.protocol import WaldConfig, wald_scene
    from pipeline.io.scene_files import read_scene

    scenes = [read_scene(d) for d in scene_dirs]
    cfg = WaldConfig(crop=crop, seed=seed)
    per_scene: dict[str, list[dict]] = {}
    for scene in scenes:
        rows = []
        if baselines:
            res = wald_scene(scene, list(baselines), cfg)
            rows += [_row(m, res.methods[m]) for m in baselines]
        for n in steps:
            options = MethodOptions(
                sr_weights=sr_weights, fusion_weights=fusion_weights, steps=n, precision=precision
            )
            res = wald_scene(scene, ["difffusr"], cfg, options=options)
            rows.append({"steps": n, **_row(f"difffusr {n} steps", res.methods["difffusr"])})
        per_scene[scene.name] = rows
    by_scene = list(per_scene.values())
    mean_rows = [_mean([rows[i] for rows in by_scene]) for i in range(len(by_scene[0]))]
    return {
        "benchmark": "ddim_steps",
        "scenes": [s.name for s in scenes],
        "shape10": [list(s.b10.shape[-2:]) for s in scenes],
        "crop": crop,
        "seed": seed,
        "precision": precision,
        "sr_weights": sr_weights or "shipped",
        "fusion_weights": fusion_weights or "shipped",
        "rule": (
            f"fewest steps with mean 10 m PSNR within {PSNR_TOL_DB} dB and 12-band ERGAS within "
            f"{100 * ERGAS_TOL_REL:.0f} % of {REFERENCE_STEPS} steps"
        ),
        "default_steps": pick_default_steps(mean_rows),
        "rows": mean_rows,
        "per_scene": per_scene,
        "machine": machine(),
    }


def markdown(res: dict) -> str:
    lines = [
        (
            f"Wald x4, mean of {', '.join(res['scenes'])} (seed {res['seed']}, {res['precision']}); "
            "PSNR dB / SSIM per group, ERGAS over 12 bands"
        ),
        "",
        (
            "| method | seconds | 10m PSNR | 10m SSIM | 20m PSNR | 60m PSNR | all PSNR | all ERGAS "
            "| 10m halluc. | 10m improv. |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['label']} | {r['seconds']:.1f} | {r['10m_psnr']:.3f} | {r['10m_ssim']:.4f} | "
            f"{r['20m_psnr']:.2f} | {r['60m_psnr']:.2f} | {r['all_psnr']:.2f} | {r['all_ergas']:.3f} | "
            f"{r['10m_hallucination']:.3f} | {r['10m_improvement']:.3f} |"
        )
    lines += ["", f"default_steps ({res['rule']}): {res['default_steps']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ddim_steps", description=__doc__.split("\n")[0])
    p.add_argument(
        "--scene", nargs="+", required=True, help="held-out scene folders (B01.tif ... B12.tif each)"
    )
    p.add_argument("--steps", default="1,4,10,20,50", help="comma list of DDIM step counts")
    p.add_argument("--sr-weights", default=None)
    p.add_argument("--fusion-weights", default=None)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--crop", type=int, default=None, help="central crop of the 10 m grid, px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="JSON output path")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = sweep(
        args.scene,
        [int(s) for s in args.steps.split(",")],
        sr_weights=args.sr_weights,
        fusion_weights=args.fusion_weights,
        precision=args.precision,
        crop=args.crop,
        seed=args.seed,
        baselines=() if args.no_baselines else BASELINES,
    )
    write_json(args.json, res)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
