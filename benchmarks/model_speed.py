"""Throughput of the learned method per batch size: tiles/s of `predict_tiles` (one forward pass of each
network per batch), and what it means per Sentinel-2 granule.

The tiles are production-shaped windows (core 96 + 2 x 12 halo = 120 px at 10 m, output 480 px at 2.5 m)
cut from a bundled held-out scene, so the real nodata filling, SR, fusion and masking all run.

    python -m benchmarks.model_speed --batches 1,4,16 --precision fp32 \\
        --json benchmarks/results/model_speed_cpu.json
    python -m benchmarks.model_speed --device cuda --batches 1,4,16,32 --precision bf16

Prints tiles/s per batch size and granules per device-hour (a 110 km granule is ~13,000 tiles of 96 px core).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import machine, write_json

#: Tiles of 96 px core in a 110 km x 110 km granule (10 m grid: 10980 px / 96 ~ 115 per side).
GRANULE_TILES = 13_000
SCENE = "data/samples/heldout/S2A_MSIL2A_20170617T113321_4_55"


def tiles(window: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n copies of the scene's top-left window x window block (10 m px, multiple of 6), each group stacked."""
    from pipeline.io.scene_files import read_scene

    scene = read_scene(SCENE)
    out = [np.stack([g[:, : window // k, : window // k]] * n) for g, k in zip(scene.groups, (1, 2, 6))]
    return out[0], out[1], out[2]


def measure(
    batches: list[int], *, window: int, device: str, precision: str, steps: int | None, repeats: int
) -> dict:
    from pipeline.inference.methods import MethodOptions, get_method
    from pipeline.inference.predict import predict_tiles

    method = get_method("difffusr", MethodOptions(device=device, precision=precision, steps=steps))
    rows = []
    for b in batches:
        groups = tiles(window, b)
        predict_tiles(method, *groups, seeds=list(range(b)))  # warm-up (kernel selection, allocator)
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            predict_tiles(method, *groups, seeds=list(range(b)))
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        best = min(times)
        tps = b / best
        rows.append(
            {
                "batch": b,
                "seconds_per_batch": best,
                "tiles_per_s": tps,
                "granules_per_device_hour": tps * 3600 / GRANULE_TILES,
            }
        )
        print(f"batch {b:3d}: {tps:.3f} tiles/s, {tps * 3600 / GRANULE_TILES:.3f} granules per {device}-hour")
    return {
        "benchmark": "model_speed",
        "window_10m_px": window,
        "device": device,
        "precision": method.precision,
        "steps": method.steps,
        "repeats": repeats,
        "granule_tiles": GRANULE_TILES,
        "rows": rows,
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_speed", description=__doc__.split("\n")[0])
    p.add_argument("--batches", default="1,4,16", help="comma list of batch sizes")
    p.add_argument("--window", type=int, default=120, help="tile window, 10 m px (core + 2 halo)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the weights' default)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="JSON output path")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = measure(
        [int(b) for b in args.batches.split(",")],
        window=args.window,
        device=args.device,
        precision=args.precision,
        steps=args.steps,
        repeats=args.repeats,
    )
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
