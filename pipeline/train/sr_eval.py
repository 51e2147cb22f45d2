"""Held-out fidelity of the SR model under the Wald protocol (x4), against bicubic.

For each Sentinel-2 scene folder (B04/B03/B02 GeoTIFFs, DN/10000 reflectance): the native 10 m
RGB is the reference; the LR input is `sensor_model(reference)` (Gaussian sigma 2 HR px + bicubic
x1/4, i.e. 40 m); the model and bicubic upsample it x4 back to 10 m. Reported per scene:
- psnr / ssim of the RGB against the reference (peak = the reference's maximum, per scene),
- l1_consistency: mean |input - sensor_model(output)| (reflectance), and
- sam_consistency_deg: mean spectral angle between input and sensor_model(output) (degrees).
Rows: the model ("sr"), bicubic, and bicubic followed by the same back-projection the model's
low-frequency consistency uses ("bicubic_bp").

`python -m pipeline.train.sr_eval --weights DIR --scenes DIR... [--steps 20] [--json OUT]`
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
from pipeline.errors import DataError
from pipeline.models.degradation import sensor_model
from pipeline.models.diffusion.model import SRDiffusion, load_sr_model, lowfreq_project
from pipeline.train.hr_data import _band_file, _read


def load_rgb(folder: str | Path) -> torch.Tensor:
    """(1, 3, H, W) float32 reflectance R, G, B of a Sentinel-2 scene folder."""
    folder = Path(folder)
    files = [_band_file(folder, b) for b in RGB_BANDS] if folder.is_dir() else [None]
    if not all(files):
        raise DataError(
            f"'{folder}' lacks one of {list(RGB_BANDS)} as GeoTIFF; pass Sentinel-2 scene folders"
        )
    img = np.stack([_read(f)[0] for f in files]).astype(np.float32) / 10000.0  # type: ignore[arg-type]
    return torch.from_numpy(img)[None]


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB with peak = max(ref)."""
    mse = F.mse_loss(x, ref).item()
    return float(10 * np.log10(ref.max().item() ** 2 / max(mse, 1e-20)))


def ssim(x: torch.Tensor, ref: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM over channels (Gaussian window 11/1.5, K1 0.01, K2 0.03, data range = max(ref) - min(ref))."""
    c = x.shape[1]
    ax = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    w2 = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    w = w2.float().expand(c, 1, window, window)
    L = (ref.max() - ref.min()).item()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mu_x, mu_y = F.conv2d(x, w, groups=c), F.conv2d(ref, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(ref * ref, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * ref, w, groups=c) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def spectral_angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean angle (degrees) between per-pixel spectra of (1, C, H, W) tensors."""
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).mean())


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
        lr = sensor_model(ref)
        bic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
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
        bic_bp = lowfreq_project(bic, lr)
        for name, x in (("sr", sr), ("bicubic", bic), ("bicubic_bp", bic_bp)):
            back = sensor_model(x)
            row[f"{name}_psnr"] = round(psnr(x, ref), 3)
            row[f"{name}_ssim"] = round(ssim(x, ref), 4)
            row[f"{name}_l1_consistency"] = round(float((back - lr).abs().mean()), 5)
            row[f"{name}_sam_consistency_deg"] = round(spectral_angle_deg(back, lr), 3)
        out[Path(sc).name] = row
    return out


def cli_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.train.sr_eval", description="Wald x4 fidelity of SR weights"
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
