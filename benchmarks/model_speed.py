"""Throughput of the learned method per batch size: tiles/s of `predict_tiles` (one forward pass of each
network per batch), and what it means per Sentinel-2 granule.

The tiles are production-shaped windows (core 96 + 2 x 12 halo = 120 px at 10 m, output 480 px at 2.5 m)
cut from a bundled held-out scene, so the real nodata filling, SR, fusion and masking all run.

    python -m benchmarks.model_speed --batches 1,4,16 --precision fp32 \\
        --json benchmarks/results/model_speed_cpu.json
    python -m benchmarks.model_speed --device cuda --batches 1,4,16,32 --precision bf16

Prints tiles/s per batch size and granules per device-hour (a 110 km granule is ~13,000 tiles of 96 px core).

`--ensembles` (the fusion nets' geometric self-ensemble, `--self-ensemble`): seconds per tile of the shipped
learned method at the first of --batches, with each listed ensemble (`N` on every group net, `N:10m+20m` on
those groups only) against the nets alone, in one process:

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184 python -m benchmarks.model_speed --precision bf16 \
        --batches 4 --threads 2 --ensembles 2:10m,4:10m,8:10m,2,4,8 \
        --json benchmarks/results/ensemble_cost_cpu.json

`--compare` (issue 12's speed targets): per output tile, the whole learned method (diffusion SR of the RGB +
the three fusion nets) built from a preset's architecture with random weights (the cost does not depend on
the weights), in one process, against the fp32 batch-1 eager run of the same networks at 20 steps (the
reference configuration's compute): bf16 + channels_last at 20 steps, and the default precision with the
shipped SR's default steps. Run it with the workers' allocator env:

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184 python -m benchmarks.model_speed --compare \
        --presets paper --window 120 --repeats 1 --json benchmarks/results/model_speed_compare_paper.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, write_json

#: Tiles of 96 px core in a 110 km x 110 km granule (10 m grid: 10980 px / 96 ~ 115 per side).
GRANULE_TILES = 13_000
SCENE = "data/samples/heldout/S2A_MSIL2A_20170617T113321_4_55"
#: The workers' allocator env (pipeline.inference.actors); glibc reads it at process start only.
ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
#: The shipped SR's config: its `default_steps` is the "default steps" variant of --compare.
SHIPPED_SR_CONFIG = Path(__file__).resolve().parents[1] / "pipeline/weights/sr_small/config.json"


def window_groups(window: int, source: str = SCENE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-left window x window block (10 m px, multiple of 6) of a scene folder, or of an `.npz` that
    `--save-window` wrote from one (a device machine without GDAL reads that): the 10/20/60 m groups."""
    if source.endswith(".npz"):
        with np.load(source) as saved:
            groups = [saved[name] for name in ("b10", "b20", "b60")]
        if groups[0].shape[-1] < window:
            raise SystemExit(f"{source} holds a {groups[0].shape[-1]} px window, less than --window {window}")
    else:
        from pipeline.io.scene_files import read_scene

        groups = list(read_scene(source).groups)
    out = [g[:, : window // k, : window // k] for g, k in zip(groups, (1, 2, 6))]
    return out[0], out[1], out[2]


def tiles(window: int, n: int, source: str = SCENE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n copies of the window (`window_groups`), each group stacked."""
    return stacked(window_groups(window, source), n)


def stacked(groups: tuple[np.ndarray, ...], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n copies of each group's window, stacked as a batch."""
    out = [np.stack([g] * n) for g in groups]
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class TileSetup:
    """What every timing of the shipped learned method on production-shaped tiles shares."""

    window: int  # LR tile side, 10 m px (core + 2 halo)
    device: str
    precision: str
    steps: int | None  # DDIM steps (None: the SR weights' default)
    repeats: int  # timed calls, best of them
    source: str = SCENE  # scene folder, or an .npz of one window (`--save-window`)

    def learned_method(self):
        """The shipped learned method (`difffusr`) with this setup's device, precision and steps."""
        from pipeline.inference.methods import MethodOptions, get_method

        return get_method(
            "difffusr", MethodOptions(device=self.device, precision=self.precision, steps=self.steps)
        )


def measure(batches: list[int], setup: TileSetup) -> dict:
    """Tiles/s per batch size, and how far tile 0 (seed 0 in every batch) is from its batch-1 pixels: 0 where
    the networks are batch-invariant on this device (they are on CPU, tests/inference/test_batching.py)."""
    from pipeline.inference.predict import predict_tiles

    method = setup.learned_method()
    rows = []
    # read once: every batch size stacks the same window
    window_px = window_groups(setup.window, setup.source)
    alone = predict_tiles(method, *stacked(window_px, 1), seeds=[0])[0]
    for b in batches:
        groups = stacked(window_px, b)
        # the first call is also the warm-up (kernel selection, allocator)
        first = predict_tiles(method, *groups, seeds=list(range(b)))[0]
        diff = float(np.nanmax(np.abs(first - alone)))
        best = _timed(
            lambda groups=groups, b=b: predict_tiles(method, *groups, seeds=list(range(b))),
            warmup=0,
            repeats=setup.repeats,
            device=setup.device,
        )
        tps = b / best
        rows.append(
            {
                "batch": b,
                "seconds_per_batch": best,
                "tiles_per_s": tps,
                "granules_per_device_hour": tps * 3600 / GRANULE_TILES,
                "tile0_max_abs_diff_to_batch1": diff,
            }
        )
        print(
            f"batch {b:3d}: {tps:.3f} tiles/s, "
            f"{tps * 3600 / GRANULE_TILES:.3f} granules per {setup.device}-hour, "
            f"tile 0 vs batch 1: max abs diff {diff:.3g}"
        )
    return {
        "benchmark": "model_speed",
        "window_10m_px": setup.window,
        "scene": setup.source,
        "device": setup.device,
        "precision": method.precision,
        "steps": method.steps,
        "repeats": setup.repeats,
        "granule_tiles": GRANULE_TILES,
        "rows": rows,
        "machine": machine(),
    }


def parse_ensembles(text: str) -> list[tuple[int, tuple[str, ...] | None]]:
    """ "2:10m,4:10m+20m,8" -> [(2, ("10m",)), (4, ("10m", "20m")), (8, None)] (None: every group)."""
    out = []
    for item in text.split(","):
        size, _, groups = item.partition(":")
        out.append((int(size), tuple(groups.split("+")) if groups else None))
    return out


def ensemble_cost(variants: list[tuple[int, tuple[str, ...] | None]], batch: int, setup: TileSetup) -> dict:
    """Seconds per tile of `predict_tiles` (shipped weights) with each self-ensemble variant, and the ratio to
    the fusion nets alone (measured first, in the same process, on the same tiles)."""
    from pipeline.inference.predict import predict_tiles
    from pipeline.models.fusion import set_self_ensemble

    method = setup.learned_method()
    groups = stacked(window_groups(setup.window, setup.source), batch)
    seeds = list(range(batch))
    rows = []
    for size, names in [(1, None), *variants]:
        set_self_ensemble(method.fusion_model, 1)
        set_self_ensemble(method.fusion_model, size, names)
        seconds = (
            _timed(
                lambda: predict_tiles(method, *groups, seeds=seeds),
                warmup=1,
                repeats=setup.repeats,
                device=setup.device,
            )
            / batch
        )
        label = "off" if size == 1 else f"x{size} {'+'.join(names) if names else 'all groups'}"
        rows.append(
            {
                "variant": label,
                "seconds_per_tile": seconds,
                "ratio_to_off": seconds / rows[0]["seconds_per_tile"] if rows else 1.0,
            }
        )
        print(f"{label:18s} {seconds:7.3f} s/tile  {rows[-1]['ratio_to_off']:.2f}x", flush=True)
    return {
        "benchmark": "ensemble_cost",
        "device": setup.device,
        "precision": method.precision,
        "steps": method.steps,
        "window_10m_px": setup.window,
        "batch": batch,
        "repeats": setup.repeats,
        "scene": setup.source,
        "allocator_env": {k: os.environ.get(k) for k in ALLOCATOR_ENV},
        "rows": rows,
        "machine": machine(),
    }


def _timed(fn, *, warmup: int, repeats: int, device: str = "cpu") -> float:
    def sync() -> None:
        if device == "cuda":  # kernels run asynchronously: time the work, not its launch
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def compare(
    presets: list[str],
    *,
    window: int,
    source: str = SCENE,
    steps_default: int,
    precision_default: str,
    warmup: int,
    repeats: int,
    device: str = "cpu",
) -> dict:
    """Seconds per output tile of the learned method per preset and variant, and the ratios to fp32.

    Args:
        presets: "small" and/or "paper" (SR: pipeline.models.diffusion.config, fusion:
            pipeline.models.fusion.config), freshly initialised.
        window: LR tile side, 10 m px (multiple of 6); the output tile is 4 x window at 2.5 m.
        steps_default, precision_default: the "default" variant (the shipped SR's default_steps and
            pipeline.config.DEFAULT_PRECISION).
        warmup, repeats: untimed and timed calls per variant (best of the timed ones; on CUDA give a warm-up,
            the first call pays cuDNN's algorithm search).
        device: "cpu" or "cuda".

    Returns:
        JSON-able dict with one row per (preset, variant): seconds per tile and ratio to the fp32 row.
    """
    from pipeline.models import baselines
    from pipeline.models.diffusion import SRDiffusion, get_preset
    from pipeline.models.fusion import FusionModel, preset_configs
    from pipeline.models.precision import memory_format

    # freshly initialised nets make subnormal activations, which are very slow on x86 (trained ones do not)
    torch.set_flush_denormal(True)
    b10, b20, b60 = (torch.from_numpy(g).to(device) for g in tiles(window, 1, source))
    variants = [
        ("fp32 eager, 20 steps (reference compute)", "fp32", 20),
        ("bf16 + channels_last, 20 steps", "bf16", 20),
        (f"default: {precision_default}, {steps_default} steps", precision_default, steps_default),
    ]
    rows = []
    for preset in presets:
        torch.manual_seed(0)
        sr = SRDiffusion(get_preset(preset)).eval().to(device)
        fusion = FusionModel(preset_configs(preset)).eval().to(device)
        base = None
        for label, precision, steps in variants:
            fmt = memory_format(precision)
            sr, fusion = sr.to(memory_format=fmt), fusion.to(memory_format=fmt)

            def forward(sr=sr, fusion=fusion, precision=precision, steps=steps):
                # DiffFuSR._forward on one tile (its batch-of-two padding of small CPU tiles is for
                # bit-identity across batch sizes, not part of the compute compared here)
                gen = [torch.Generator().manual_seed(0)]
                lr = baselines.rgb_of(b10)
                rgb = sr.super_resolve(lr, steps=steps, generator=gen, precision=precision)
                return fusion.fuse(b10, b20, b60, rgb, precision=precision)

            seconds = _timed(forward, warmup=warmup, repeats=repeats, device=device)
            base = seconds if base is None else base
            row = {
                "preset": preset,
                "variant": label,
                "precision": precision,
                "steps": steps,
                "seconds_per_tile": seconds,
                "ratio_to_fp32": seconds / base,
            }
            rows.append(row)
            print(f"{preset:6s} {label:45s} {seconds:8.2f} s/tile  {seconds / base:.3f}x", flush=True)
    return {
        "benchmark": "model_speed_compare",
        "device": device,
        "window_10m_px": window,
        "scene": source,
        "output_tile_px": 4 * window,
        "batch": 1,
        "warmup": warmup,
        "repeats": repeats,
        "allocator_env": {k: os.environ.get(k) for k in ALLOCATOR_ENV},
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
    p.add_argument("--compare", action="store_true", help="per-tile ratios to fp32 eager (module docstring)")
    p.add_argument("--presets", default="small,paper", help="--compare: comma list of small, paper")
    p.add_argument("--warmup", type=int, default=0, help="--compare: untimed calls per variant")
    p.add_argument("--scene", default=SCENE, help="scene folder, or an .npz written by --save-window")
    p.add_argument("--save-window", default=None, help="write the --scene's window to this .npz and stop")
    p.add_argument(
        "--ensembles",
        default=None,
        help="per-tile cost of the fusion self-ensemble variants, e.g. 2:10m,4:10m,8 (module docstring)",
    )
    args = p.parse_args(argv)
    if args.save_window:
        b10, b20, b60 = window_groups(args.window, args.scene)
        np.savez_compressed(args.save_window, b10=b10, b20=b20, b60=b60, scene=args.scene)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        from pipeline.config import DEFAULT_PRECISION

        missing = [k for k in ALLOCATOR_ENV if k not in os.environ]
        if missing:
            print(f"warning: {', '.join(missing)} unset: not the workers' allocator setup", flush=True)
        steps_default = json.loads(SHIPPED_SR_CONFIG.read_text())["default_steps"]
        res = compare(
            args.presets.split(","),
            window=args.window,
            source=args.scene,
            steps_default=args.steps or steps_default,
            precision_default=DEFAULT_PRECISION,
            warmup=args.warmup,
            repeats=args.repeats,
            device=args.device,
        )
        write_json(args.json, res)
        return 0
    batches = [int(b) for b in args.batches.split(",")]
    setup = TileSetup(args.window, args.device, args.precision, args.steps, args.repeats, args.scene)
    if args.ensembles:
        res = ensemble_cost(parse_ensembles(args.ensembles), batches[0], setup)
    else:
        res = measure(batches, setup)
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
