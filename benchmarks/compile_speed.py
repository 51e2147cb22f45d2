"""Does torch.compile (inductor) speed up the learned method on this machine? Eager vs compiled, one process.

Per production tile (core 96 + 2 x 12 halo = 120 px at 10 m -> 480 px at 2.5 m, cut from a bundled held-out
scene, batch 1, fp32): the diffusion SR of the RGB at the given steps and the three fusion nets, with the
denoiser, the RRDB encoder and each fusion net compiled (`dynamic=False`), with and without inductor's weight
freezing.
Reports seconds per tile (best of --repeats after the compiling call), the compile time, and the largest
difference to the eager output (compiled kernels round differently: the pipeline's bit-identity across batch
sizes and reruns is a property of the eager kernels).

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184 python -m benchmarks.compile_speed --preset small \\
        --json benchmarks/results/compile_speed_small.json
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine, write_json
from benchmarks.model_speed import tiles


def _run(sr, fusion, b10, b20, b60, steps: int) -> tuple[torch.Tensor, float, float]:
    from pipeline.models import baselines

    with torch.no_grad():
        gen = [torch.Generator().manual_seed(0)]
        t0 = time.perf_counter()
        rgb = sr.super_resolve(baselines.rgb_of(b10), steps=steps, generator=gen)
        t1 = time.perf_counter()
        out = fusion.fuse(b10, b20, b60, rgb)
        return out, t1 - t0, time.perf_counter() - t1


def _best(sr, fusion, tile, steps: int, repeats: int) -> tuple[torch.Tensor, float, float]:
    runs = [_run(sr, fusion, *tile, steps) for _ in range(repeats)]
    return runs[0][0], min(r[1] for r in runs), min(r[2] for r in runs)


def _models(preset: str):
    from pipeline.models.diffusion import SRDiffusion, get_preset
    from pipeline.models.fusion import FusionModel, preset_configs

    torch.manual_seed(0)
    return SRDiffusion(get_preset(preset)).eval(), FusionModel(preset_configs(preset)).eval()


def main(argv: list[str] | None = None) -> int:
    import torch._inductor.config as inductor_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small", choices=("small", "paper"))
    p.add_argument("--window", type=int, default=120, help="tile window, 10 m px (multiple of 6)")
    p.add_argument("--steps", type=int, default=3, help="DDIM steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # fresh weights make subnormals, slow on x86 (trained ones do not)
    tile = tuple(torch.from_numpy(g) for g in tiles(a.window, 1))
    rows = []
    sr, fusion = _models(a.preset)
    eager, e_sr, e_fu = _best(sr, fusion, tile, a.steps, a.repeats)
    rows.append({"variant": "eager", "sr_s": e_sr, "fusion_s": e_fu, "total_s": e_sr + e_fu})
    print(f"eager                SR {e_sr:.2f} s  fusion {e_fu:.2f} s", flush=True)
    for freezing in (False, True):
        torch._dynamo.reset()
        inductor_config.freezing = freezing
        sr, fusion = _models(a.preset)
        sr.model = torch.compile(sr.model, dynamic=False)
        sr.encoder = torch.compile(sr.encoder, dynamic=False)
        for name in list(fusion.nets.keys()):
            fusion.nets[name] = torch.compile(fusion.nets[name], dynamic=False)
        t0 = time.perf_counter()
        _run(sr, fusion, *tile, a.steps)
        compile_s = time.perf_counter() - t0
        out, c_sr, c_fu = _best(sr, fusion, tile, a.steps, a.repeats)
        row = {
            "variant": f"compiled, freezing={freezing}",
            "compile_and_first_call_s": compile_s,
            "sr_s": c_sr,
            "fusion_s": c_fu,
            "total_s": c_sr + c_fu,
            "ratio_to_eager": (c_sr + c_fu) / (e_sr + e_fu),
            "max_abs_diff_to_eager": float((out - eager).abs().max()),
        }
        rows.append(row)
        print(
            f"{row['variant']:20s} SR {c_sr:.2f} s  fusion {c_fu:.2f} s"
            f"  total {row['ratio_to_eager']:.3f}x eager  compile {compile_s:.0f} s"
            f"  max|diff| {row['max_abs_diff_to_eager']:.1e}",
            flush=True,
        )
    if a.json:
        write_json(
            a.json,
            {
                "benchmark": "compile_speed",
                "preset": a.preset,
                "window_10m_px": a.window,
                "steps": a.steps,
                "precision": "fp32",
                "batch": 1,
                "rows": rows,
                "machine": machine(),
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
