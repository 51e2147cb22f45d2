"""Sampling steps vs time and fidelity: DiffFuSR with 1, 4, 10, 20, 50 DDIM steps, Wald x4 on a held-out
scene.

For each step count the whole method (diffusion SR of the RGB + fusion of the 12 bands) super-resolves the
x4-degraded held-out scene (`pipeline.eval.protocol.wald_scene`), and the scores at the native grids are
reported with the wall time; bicubic and Gram-Schmidt are run once as references.

    python -m benchmarks.ddim_steps --scene data/samples/heldout/S2B_MSIL2A_20170924T93020_69_24 \\
        --steps 1,4,10,20,50 --json benchmarks/results/ddim_steps.json
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, write_json

BASELINES = ("bicubic", "gs")


def sweep(
    scene_dir: str,
    steps: list[int],
    *,
    sr_weights: str | None = None,
    fusion_weights: str | None = None,
    crop: int | None = None,
    seed: int = 0,
    baselines: tuple[str, ...] = BASELINES,
) -> dict:
    """Wald x4 scores and wall time per DDIM step count (and for the baselines)."""
    from pipeline.eval.protocol import WaldConfig, wald_scene
    from pipeline.inference.methods import MethodOptions
    from pipeline.io.scene_files import read_scene

    scene = read_scene(scene_dir)
    cfg = WaldConfig(crop=crop, seed=seed)
    rows = []

    def row(label: str, mr) -> dict:
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

    if baselines:
        res = wald_scene(scene, list(baselines), cfg)
        rows += [row(m, res.methods[m]) for m in baselines]
    for n in steps:
        options = MethodOptions(sr_weights=sr_weights, fusion_weights=fusion_weights, steps=n)
        res = wald_scene(scene, ["difffusr"], cfg, options=options)
        rows.append({"steps": n, **row(f"difffusr {n} steps", res.methods["difffusr"])})
    return {
        "benchmark": "ddim_steps",
        "scene": scene.name,
        "shape10": list(scene.b10.shape[-2:]),
        "crop": crop,
        "seed": seed,
        "sr_weights": sr_weights or "shipped",
        "fusion_weights": fusion_weights or "shipped",
        "rows": rows,
        "machine": machine(),
    }


def markdown(res: dict) -> str:
    lines = [
        f"Wald x4 on {res['scene']} (seed {res['seed']}); PSNR dB / SSIM per group, ERGAS over 12 bands",
        "",
        (
            "| method | seconds | 10m PSNR | 10m SSIM | 20m PSNR | 60m PSNR | all PSNR | all ERGAS "
            "| 10m halluc. | 10m improv. |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['label']} | {r['seconds']:.1f} | {r['10m_psnr']:.2f} | {r['10m_ssim']:.4f} | "
            f"{r['20m_psnr']:.2f} | {r['60m_psnr']:.2f} | {r['all_psnr']:.2f} | {r['all_ergas']:.3f} | "
            f"{r['10m_hallucination']:.3f} | {r['10m_improvement']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ddim_steps", description=__doc__.split("\n")[0])
    p.add_argument("--scene", required=True, help="held-out scene folder (B01.tif ... B12.tif)")
    p.add_argument("--steps", default="1,4,10,20,50", help="comma list of DDIM step counts")
    p.add_argument("--sr-weights", default=None)
    p.add_argument("--fusion-weights", default=None)
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
        crop=args.crop,
        seed=args.seed,
        baselines=() if args.no_baselines else BASELINES,
    )
    write_json(args.json, res)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
