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

`difffusr eval sr-wald --scenes DIR... [--weights DIR] [--steps 10 20] [--samples 1 4] [--json OUT]`
(its flags: `pipeline.cli.eval`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.bands import RGB_BANDS
from pipeline.eval import metrics
from pipeline.io.scene_files import read_bands
from pipeline.models.diffusion.model import LOWFREQ_ITERATIONS, SRDiffusion
from pipeline.models.sensor import backproject, wald_degrade

#: SR factor of the protocol (10 m -> 40 m -> 10 m).
FACTOR = 4
#: `--lowfreq` choice -> the `lowfreq_consistency` values evaluated (None: the model config's own).
LOWFREQ_MODES: dict[str, tuple[bool | None, ...]] = {
    "on": (True,),
    "off": (False,),
    "both": (False, True),
    "default": (None,),
}


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
    return metrics.psnr(p, r, data_range=peak), float(
        np.mean([metrics.ssim(pb, rb, data_range=span) for pb, rb in zip(p, r, strict=True)])
    )


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


def sweep(
    model: SRDiffusion,
    scenes: list[str | Path],
    *,
    steps: list[int],
    samples: list[int],
    lowfreq: str = "both",
    seed: int = 0,
) -> Iterator[dict]:
    """`evaluate` for every (steps, samples, low-frequency consistency) combination, one row each.

    Yields:
        {"steps", "num_samples", "lowfreq_consistency", "scenes": evaluate(...)} in loop order.
    """
    for n in steps:
        for k in samples:
            for lf in LOWFREQ_MODES[lowfreq]:
                res = evaluate(model, scenes, n, seed, lf, k)
                yield {"steps": n, "num_samples": k, "lowfreq_consistency": lf, "scenes": res}
