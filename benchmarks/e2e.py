"""End to end on the bundled demo: wall time per stage and the ratio end-to-end / bare model compute.

Stage times come from the run's manifest.json (`timings_s`: search, ingest, inference, mosaic, export).
Bare model compute is what the same method costs on the same tiles with no pipeline around it: the method
is called in this process on batches of real windows (the run's window size, `batch_tiles` per call) cut
from the demo scene, and the median batch time is multiplied by the run's number of batches.

    # run the demo job (loopback STAC API + local Ray) and measure it
    python -m benchmarks.e2e --run --method gs --out /tmp/bench_e2e --json benchmarks/results/e2e_gs.json
    # or analyse a finished run
    python -m benchmarks.e2e --manifest out/demo/manifest.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, median_time, write_json
from benchmarks.demo_run import CATALOG, demo_argv, run_monitored, stac_server

DEMO_PATCH = "S2A_MSIL2A_20170613T101031_87_48"


def real_windows(window: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` windows of `window` 10 m px (multiple of 6) from the demo scene, reflect-padded when larger."""
    from pipeline.io.scene_files import read_scene

    scene = read_scene(CATALOG / DEMO_PATCH)
    out = []
    for arr, k in zip(scene.groups, (1, 2, 6), strict=True):
        size = window // k
        big = np.pad(
            arr,
            ((0, 0), (0, max(0, size - arr.shape[1])), (0, max(0, size - arr.shape[2]))),
            mode="symmetric",
        )
        out.append(np.stack([big[:, :size, :size]] * n).astype(np.float32))
    return out[0], out[1], out[2]


def bare_compute(manifest: dict, *, repeats: int = 3) -> dict:
    """Median time of the run's method on one batch of real windows, times the run's number of batches."""
    from pipeline.inference.methods import MethodOptions, get_method
    from pipeline.inference.predict import predict_tiles

    cfg = manifest["config"]
    method = cfg["method"]
    model = cfg.get("model") or {}
    options = MethodOptions(**{k: v for k, v in model.items() if k in MethodOptions.__dataclass_fields__})
    lay = manifest["layout"]
    window = lay["core"] + 2 * lay["halo"]
    batch = int((cfg.get("compute") or {}).get("batch_tiles", 4))
    tiles = int(manifest["tiles"]) - int(manifest.get("tiles_empty", 0))
    solver = get_method(method, options)
    b10, b20, b60 = real_windows(window, min(batch, max(1, tiles)))
    t = median_time(
        lambda: predict_tiles(solver, b10, b20, b60, seeds=range(len(b10))), repeats=repeats, warmup=1
    )
    n_batches = math.ceil(tiles / batch)
    return {
        "method": method,
        "window_10m_px": window,
        "batch_tiles": batch,
        "tiles": tiles,
        "batches": n_batches,
        "batch_median_s": t["median_s"],
        "bare_model_s": t["median_s"] * n_batches,
    }


def summarise(manifest: dict, bare: dict) -> dict:
    """Per-stage times, end-to-end / bare and inference / bare ratios."""
    stages = dict(manifest["timings_s"])
    total = stages.get("total", sum(v for k, v in stages.items() if k != "total"))
    return {
        "stages_s": stages,
        "total_s": total,
        "bare": bare,
        "ratio_end_to_end_over_bare": total / bare["bare_model_s"],
        "ratio_inference_stage_over_bare": stages.get("inference", math.nan) / bare["bare_model_s"],
        "area_km2": manifest.get("area_km2"),
        "layout": manifest.get("layout"),
    }


def markdown(res: dict) -> str:
    s = res["stages_s"]
    b = res["bare"]
    rows = " | ".join(f"{k} {v:.2f}" for k, v in s.items())
    return (
        f"method {b['method']}: stages (s): {rows}\n\nbare model compute {b['bare_model_s']:.2f} s "
        f"({b['batches']} batch(es) of {b['batch_tiles']} x {b['window_10m_px']} px windows, "
        f"{b['batch_median_s']:.2f} s each); "
        f"end-to-end / bare = {res['ratio_end_to_end_over_bare']:.1f}x, inference stage / bare = "
        f"{res['ratio_inference_stage_over_bare']:.1f}x"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="manifest.json of a finished `difffusr run`")
    src.add_argument(
        "--run", action="store_true", help="run the demo job now (loopback STAC API + local Ray)"
    )
    p.add_argument("--method", default="gs", help="method of the demo job (with --run)")
    p.add_argument(
        "--out", default="/tmp/difffusr_bench_e2e", help="output folder of the demo job (with --run)"
    )
    p.add_argument(
        "--run-args", default="", help="extra `difffusr run` arguments, space-separated (with --run)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the bare measurement")
    p.add_argument("--json", default=None, help="JSON output path")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import json

    monitored = None
    if args.run:
        with stac_server() as server:
            monitored = run_monitored(
                demo_argv(
                    server.url,
                    Path(args.out),
                    method=args.method,
                    extra=args.run_args.split() if args.run_args else None,
                )
            )
        if monitored.returncode != 0 or monitored.manifest is None:
            print(monitored.stderr_tail)
            return 1
        manifest = monitored.manifest
    else:
        manifest = json.loads(Path(args.manifest).read_text())
    res = summarise(manifest, bare_compute(manifest, repeats=args.repeats))
    res["machine"] = machine()
    if monitored:
        res["child_wall_s"] = monitored.wall_s
        res["argv"] = monitored.argv
    write_json(args.json, {"benchmark": "e2e", **res})
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
