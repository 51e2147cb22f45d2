"""Held-out fidelity of the SR model under the Wald protocol (x4), against bicubic.

For each Sentinel-2 scene folder (B04/B03/B02 GeoTIFFs, read by pipeline.io.scene_files): the native 10 m
RGB is the reference; the LR input is `D(reference)`, D = the sensor model
`pipeline.models.sensor.wald_degrade` x4 (i.e. 40 m); the model and bicubic upsample it x4 back to 10 m.
Reported per scene (metrics by `pipeline.eval.metrics`):
- psnr / ssim of the RGB against the reference (peak = the reference's maximum, per scene),
- l1_consistency: mean |input - D(output)| (reflectance), and
- sam_consistency_deg: mean spectral angle between input and D(output) (degrees).
Rows: the model ("sr"), bicubic, and bicubic followed by the same back-projection the model's
low-frequency consistency uses ("bicubic_bp").

`python -m pipeline.eval.sr_wald --weights DIR --scenes DIR... [--steps 20] [--json OUT]`
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.bands import RGB_BANDS
from pipeline.eval import metrics
from pipeline.io.scene_files import read_bands
from pipeline.models.diffusion.model import LOWFREQ_ITERATIONS, SRDiffusion, load_sr_model
from pipeline.models.sensor import backproject, wald_degrade

#: SR factor of the protocol (10 m -> 40 m -> 10 m).
FACTOR = 4


def load_rgb(folder: str | Path) -> torch.Tensor:
    """(1, 3, H, W) float32 reflectance R, G, B of a Sentinel-2 scene folder (NaN = nodata).

    Raises:
        AssetError: the folder lacks B04, B03 or B02, or one cannot be read.
    """
    return torch.from_numpy(read_bands(folder, RGB_BANDS))[None]


def _rgb_scores(x: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """PSNR and SSIM of (1, 3, H, W) tensors by pipeline.eval.metrics.

    PSNR in dB with peak = max(ref); SSIM averaged over R, G, B with data range = max(ref) - min(ref), over
    the pixels whose 11 x 11 window lies inside the image.
    """
    p, r = x[0].double().numpy(), ref[0].double().numpy()
    peak, span = float(np.nanmax(r)), float(np.nanmax(r) - np.nanmin(r))
    return metrics.psnr(p, r, data_range=peak), float(np.mean([metrics.ssim(pb, rb, data_range=span)
                                                              for pb, rb in zip(p, r, strict=True)]))


def evaluate(
    model: SRDiffusion,
    scenes: list[str | Path],
    steps: int,
    seed: int = 0,
    lowfreq_consistency: bool | None = None,
    num_samples: int = 1,
) -> dict[str, dict[str, float]]:
    """Wald x4 fidelity per scene for the model and for bicubic (see module docstring)."""
    out: dict[str, dict[str, float]] = {}
    for sc in scenes:
        ref = load_rgb(sc)
        lr = wald_degrade(ref, FACTOR)
        bic = F.interpolate(lr, scale_factor=FACTOR, mode="bicubic", align_corners=False)
        t0 = time.time()
        sr = model.super_resolve(
            lr,
            steps=steps,
            generator=torch.Generator().manual_seed(seed),
            lowfreq_consistency=lowfreq_consistency,
            num_samples=num_samples,
        )
        dt = time.time() - t0
        row = {"sr_s": round(dt, 2)}
        # bicubic + the same back-projection as the model's low-frequency consistency: separates the
        # gain of the diffusion model from the gain of the projection (which knows the Wald blur).
        bic_bp = backproject(bic, lr, FACTOR, iterations=LOWFREQ_ITERATIONS)
        for name, x in (("sr", sr), ("bicubic", bic), ("bicubic_bp", bic_bp)):
            back = wald_degrade(x, FACTOR)
            psnr, ssim = _rgb_scores(x, ref)
            row[f"{name}_psnr"] = round(psnr, 3)
            row[f"{name}_ssim"] = round(ssim, 4)
            row[f"{name}_l1_consistency"] = round(float((back - lr).abs().mean()), 5)
            row[f"{name}_sam_consistency_deg"] = round(metrics.sam_deg(back[0].numpy(), lr[0].numpy()), 3)
        out[Path(sc).name] = row
    return out


def cli_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.eval.sr_wald", description="Wald x4 fidelity of SR weights"
    )
    p.add_argument("--weights", default=None, help="SR checkpoint folder (default: shipped sr_small)")
    p.add_argument("--scenes", nargs="+", required=True, help="held-out Sentinel-2 scene folders")
    p.add_argument("--steps", type=int, nargs="+", default=[20], help="DDIM steps (several: one row each)")
    p.add_argument("--lowfreq", choices=["on", "off", "both", "default"], default="both")
    p.add_argument("--samples", type=int, nargs="+", default=[1], help="samples averaged per output (K)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_sr_model(a.weights)
    modes = {"on": [True], "off": [False], "both": [False, True], "default": [None]}[a.lowfreq]
    results = []
    for steps in a.steps:
        for k in a.samples:
            for lf in modes:
                res = evaluate(model, a.scenes, steps, a.seed, lf, k)
                results.append({"steps": steps, "num_samples": k, "lowfreq_consistency": lf, "scenes": res})
                print(json.dumps(results[-1]))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(cli_main(sys.argv[1:]))
