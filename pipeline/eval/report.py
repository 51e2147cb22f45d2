"""Markdown reports (tables + PNG figures + results.json) of the Wald protocol and the consistency check."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np

from pipeline.bands import BAND_GROUPS, S2_BANDS
from pipeline.eval import figures
from pipeline.eval.protocol import ConsistencyResult, SceneResult, WaldConfig

CONVENTIONS = (
    "Conventions: reflectance units (0-1). PSNR = 10 log10(1 / MSE) (fixed data range 1.0). "
    "SSIM: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03. SAM: mean spectral angle in degrees "
    "(within a group). ERGAS = 100 (h/l) sqrt(mean_b (RMSE_b / mu_b)^2) with h/l = 1/ratio "
    "(not the x16 variant). R^2 = 1 - SS_res/SS_tot "
    "(can be negative). CC = Pearson correlation. Only pixels valid in both images are scored."
)
OPENSR_NOTE = (
    "OpenSR-test scores (v1.3.3 definitions, normalised-difference distance, 75th-percentile mask, "
    "lambda 0.05, softmin T 0.25). Consistency = the SR degraded back to the LR input with the sensor "
    "model (reflectance: L1, spectral: angle in degrees, spatial: phase-correlation shift in LR pixels). "
    "Synthesis = L1 between the bilinearly upsampled LR and the histogram-matched SR. "
    "Hallucination/omission/improvement are mean softmin probabilities. Differences from OpenSR-test: "
    "degrade-back by the sensor model instead of a bilinear resize; border crop scaled per group "
    "(border_px column); NaN pixels dropped."
)
_GROUP_KEYS = ("psnr", "ssim", "sam_deg", "ergas", "r2", "cc", "rmse")
_GROUP_HEAD = ("PSNR dB ↑", "SSIM ↑", "SAM ° ↓", "ERGAS ↓", "R² ↑", "CC ↑", "RMSE ↓")
_OS_KEYS = (
    "reflectance_l1",
    "spectral_sad_deg",
    "spatial_shift_px",
    "synthesis",
    "hallucination",
    "omission",
    "improvement",
)
_OS_HEAD = (
    "Reflectance ↓",
    "Spectral ° ↓",
    "Spatial px ↓",
    "Synthesis ↑",
    "Hallucination ↓",
    "Omission ↓",
    "Improvement ↑",
)


def fmt(v: float, key: str = "") -> str:
    """Number formatting of the tables (NaN shown as n/a)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "inf"
    if key in ("psnr",):
        return f"{v:.2f}"
    if key in ("ergas", "sam_deg", "spectral_sad_deg"):
        return f"{v:.3f}"
    if key == "mse":
        return f"{v:.2e}"
    if key in ("rmse", "mae", "reflectance_l1", "synthesis"):
        return f"{v:.5f}" if abs(v) >= 1e-5 or v == 0 else f"{v:.2e}"
    return f"{v:.4f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _mean_over_scenes(results: list[SceneResult], method: str, pick, stat=np.nanmean) -> dict[str, float]:
    dicts = [pick(r.methods[method]) for r in results]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (e.g. SAM of one band) stays NaN
        return {k: float(stat([d[k] for d in dicts])) for k in dicts[0]}


def _mean_pm_std(results: list[SceneResult], method: str, pick, keys: tuple[str, ...]) -> list[str]:
    """Table cells "mean ± std over scenes" (just the mean for one scene)."""
    mean = _mean_over_scenes(results, method, pick)
    if len(results) == 1:
        return [fmt(mean[k], k) for k in keys]
    std = _mean_over_scenes(results, method, pick, stat=np.nanstd)
    return [fmt(mean[k], k) if math.isnan(mean[k]) else f"{fmt(mean[k], k)} ± {fmt(std[k], k)}" for k in keys]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj


def write_wald_report(results: list[SceneResult], cfg: WaldConfig, out: Path, *, command: str) -> Path:
    """Write report.md, results.json and figures/*.png for a Wald run; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    methods = list(results[0].methods)
    scenes = ", ".join(
        f"{r.scene} ({r.shape10[0]}x{r.shape10[1]} px at the native 10 m grid)" for r in results
    )
    lines = [
        f"# Wald x{cfg.ratio} evaluation",
        "",
        f"Command: `{command}`",
        "",
        f"Scenes: {scenes}. Methods: {', '.join(methods)}. Seed {cfg.seed}.",
        "",
        (
            f"Protocol: every band degraded x{cfg.ratio} with the sensor model "
            "(Gaussian MTF 0.3 at Nyquist + boxcar), super-resolved x4, and scored at its native resolution "
            "(SR degraded onto the 10/20/60 m grid)."
        ),
        "",
        CONVENTIONS,
        "",
    ]
    lines += [
        f"## Mean over {len(results)} scene(s)"
        + (" (± standard deviation over scenes)" if len(results) > 1 else ""),
        "",
    ]
    for group in [g.name for g in BAND_GROUPS] + ["all"]:
        rows = []
        for m in methods:
            rows.append([m] + _mean_pm_std(results, m, lambda mr, g=group: mr.groups[g], _GROUP_KEYS))
        label = (
            "all 12 bands (mean of per-band scores; ERGAS over the 12)"
            if group == "all"
            else f"{group} group"
        )
        lines += [f"### {label}", "", table(["method", *_GROUP_HEAD], rows), ""]
    lines += ["### OpenSR-test scores", "", OPENSR_NOTE, ""]
    for group in [g.name for g in BAND_GROUPS]:
        rows = []
        for m in methods:
            s = _mean_over_scenes(results, m, lambda mr, g=group: mr.opensr[g])
            rows.append([m] + [fmt(s[k], k) for k in _OS_KEYS] + [str(int(s["border_px"]))])
        lines += [f"{group} group:", "", table(["method", *_OS_HEAD, "border_px"], rows), ""]
    rows = [[m] + [f"{np.mean([r.methods[m].seconds for r in results]):.2f}"] for m in methods]
    lines += [
        "### Super-resolution wall time per scene (s, this machine)",
        "",
        table(["method", "seconds"], rows),
        "",
    ]
    mean_bands = {
        m: {b: _mean_over_scenes(results, m, lambda mr, b=b: mr.bands[b]) for b in S2_BANDS} for m in methods
    }
    figures.band_bars(
        figdir / "summary_bands.png",
        mean_bands,
        ("psnr", "ssim"),
        title=f"Per-band scores, mean over scenes (Wald x{cfg.ratio})",
    )
    lines += ["![per-band scores](figures/summary_bands.png)", ""]
    lines += _safety_lines(results)
    for r in results:
        lines += _scene_section(r, methods, figdir)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    payload = {
        "protocol": "wald",
        "ratio": cfg.ratio,
        "data_range": cfg.data_range,
        "seed": cfg.seed,
        "command": command,
        "bands_worse_than_bicubic": [list(t) for t in bands_worse_than_bicubic(results)],
        "scenes": [
            {
                "scene": r.scene,
                "shape10": list(r.shape10),
                "methods": {
                    m: {"seconds": mr.seconds, "bands": mr.bands, "groups": mr.groups, "opensr": mr.opensr}
                    for m, mr in r.methods.items()
                },
            }
            for r in results
        ],
    }
    (out / "results.json").write_text(json.dumps(_jsonable(payload), indent=1))
    return path


#: The baselines every other method is checked against, band by band (names of `pipeline.inference`).
SAFETY_BASELINES = ("bicubic", "gs")
#: The flag of a band whose ERGAS is above bicubic's in a scene.
WORSE_FLAG = "**worse than bicubic**"


def band_ergas_vs_baselines(r: SceneResult) -> dict[str, dict[str, dict[str, float]]]:
    """Per non-baseline method and band: its ERGAS and its ratio to each baseline's ERGAS in that scene.

    Returns:
        method -> band -> {"ergas", "vs bicubic", "vs gs"} (ratios > 1: the method is worse; a ratio is
        absent when that baseline was not run).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for m, mr in r.methods.items():
        if m in SAFETY_BASELINES:
            continue
        out[m] = {}
        for b in S2_BANDS:
            e = mr.bands[b].get("ergas", math.nan)
            row = {"ergas": e}
            for base in SAFETY_BASELINES:
                if base in r.methods:
                    be = r.methods[base].bands[b].get("ergas", math.nan)
                    row[f"vs {base}"] = e / be if be > 0 else math.nan
            out[m][b] = row
    return out


def bands_worse_than_bicubic(results: list[SceneResult]) -> list[tuple[str, str, str]]:
    """(scene, method, band) of every band whose ERGAS is above bicubic's in its scene."""
    return [
        (r.scene, m, b)
        for r in results
        for m, rows in band_ergas_vs_baselines(r).items()
        for b, row in rows.items()
        if row.get("vs bicubic", math.nan) > 1.0
    ]


def _safety_lines(results: list[SceneResult]) -> list[str]:
    """The report's safety net: bands worse than bicubic, then per scene and band the ERGAS ratios."""
    if "bicubic" not in results[0].methods:
        return []
    worse = bands_worse_than_bicubic(results)
    lines = [
        "## Safety net: per band against the baselines",
        "",
        (
            "Per scene and band, each method's ERGAS and its ratio to bicubic's and to Gram-Schmidt's "
            "(`gs`) in that scene (ratio > 1: worse than that baseline). A band whose ERGAS is above "
            f"bicubic's is flagged {WORSE_FLAG}."
        ),
        "",
        (
            f"Bands worse than bicubic: {len(worse)}"
            + (": " + "; ".join(f"{s} {m} {b}" for s, m, b in worse) if worse else " (none).")
        ),
        "",
    ]
    for r in results:
        per = band_ergas_vs_baselines(r)
        for m, rows in per.items():
            body = []
            for b in S2_BANDS:
                row = rows[b]
                flag = WORSE_FLAG if row.get("vs bicubic", math.nan) > 1.0 else ""
                body.append(
                    [
                        b,
                        fmt(row["ergas"], "ergas"),
                        fmt(r.methods["bicubic"].bands[b].get("ergas", math.nan), "ergas"),
                        fmt(row.get("vs bicubic", math.nan), "ergas"),
                        fmt(r.methods["gs"].bands[b].get("ergas", math.nan), "ergas")
                        if "gs" in r.methods
                        else "n/a",
                        fmt(row.get("vs gs", math.nan), "ergas"),
                        flag,
                    ]
                )
            head = ["band", f"{m} ERGAS", "bicubic ERGAS", "vs bicubic", "gs ERGAS", "vs gs"]
            head.append("flag")
            lines += [f"{r.scene}, {m}:", "", table(head, body), ""]
    return lines


def _scene_section(r: SceneResult, methods: list[str], figdir: Path) -> list[str]:
    name = _safe(r.scene)
    lines = [f"## Scene {r.scene}", ""]
    panels = {m: r.methods[m].sr for m in methods}
    figures.crops_figure(
        figdir / f"{name}_crops.png",
        r.lr,
        panels,
        r.reference,
        title=f"{r.scene}: LR (x{r.ratio} degraded) / methods / reference",
    )
    figures.error_figure(
        figdir / f"{name}_errors.png", panels, r.reference, title=f"{r.scene}: absolute error vs reference"
    )
    figures.band_bars(
        figdir / f"{name}_bands.png",
        {m: r.methods[m].bands for m in methods},
        ("psnr", "ssim", "rmse"),
        title=f"{r.scene}: per-band scores",
    )
    figures.maps_figure(
        figdir / f"{name}_correctness_10m.png",
        {m: r.methods[m].maps["10m"] for m in methods},
        ("hallucination", "omission", "improvement"),
        title=f"{r.scene}: OpenSR class probabilities, 10 m group",
        vmax=1.0,
    )
    lines += [
        f"![crops](figures/{name}_crops.png)",
        "",
        f"![errors](figures/{name}_errors.png)",
        "",
        f"![bands](figures/{name}_bands.png)",
        "",
        f"![correctness](figures/{name}_correctness_10m.png)",
        "",
    ]
    rows = [
        [m]
        + [
            fmt(r.methods[m].groups[g][k], k)
            for g in ("10m", "20m", "60m")
            for k in ("psnr", "ssim", "ergas")
        ]
        for m in methods
    ]
    head = ["method"] + [f"{g} {k}" for g in ("10m", "20m", "60m") for k in ("PSNR", "SSIM", "ERGAS")]
    lines += [table(head, rows), ""]
    rows = [
        [b]
        + [
            fmt(r.methods[m].bands[b]["psnr"], "psnr") + " / " + fmt(r.methods[m].bands[b]["ssim"])
            for m in methods
        ]
        for b in S2_BANDS
    ]
    lines += ["Per band, PSNR dB / SSIM:", "", table(["band", *methods], rows), ""]
    return lines


def write_consistency_report(res: ConsistencyResult, out: Path, *, command: str) -> Path:
    """Write report.md, results.json and figures for an SR product checked against its inputs."""
    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    keys = (
        "r2",
        "cc",
        "ssim",
        "psnr",
        "mse",
        "ergas",
        "sam_deg",
        "reflectance_l1",
        "spectral_sad_deg",
        "spatial_shift_px",
        "synthesis",
    )
    head = (
        "R² ↑",
        "CC ↑",
        "SSIM ↑",
        "PSNR dB ↑",
        "MSE ↓",
        "ERGAS ↓",
        "SAM ° ↓",
        "Reflectance L1 ↓",
        "Spectral ° ↓",
        "Spatial px ↓",
        "Synthesis",
    )
    rows = [[g] + [fmt(res.groups[g][k], k) for k in keys] for g in res.groups]
    lines = [
        f"# Consistency of {res.product} with its inputs",
        "",
        f"Command: `{command}`",
        "",
        (
            f"Inputs: {res.inputs}. The SR product is degraded back to each band's native grid with the "
            "sensor model (factor 4 / 8 / 24 for the 10 / 20 / 60 m groups) and compared with the native "
            "input pixels (no-reference validation, DiffFuSR paper IV-E.2). "
            "ERGAS uses h/l = 1/factor of the group."
        ),
        "",
        CONVENTIONS,
        "",
        table(["group", *head], rows),
        "",
    ]
    rows = [[b] + [fmt(res.bands[b][k], k) for k in ("r2", "cc", "ssim", "psnr", "mse")] for b in S2_BANDS]
    lines += ["Per band:", "", table(["band", "R²", "CC", "SSIM", "PSNR", "MSE"], rows), ""]
    figures.crops_figure(
        figdir / "consistency_crops.png",
        res.inputs_native,
        {"SR degraded back": res.degraded},
        res.inputs_native,
        title=f"{res.product}: input / SR degraded back / input",
        lr_label="input",
    )
    figures.error_figure(
        figdir / "consistency_errors.png",
        {"SR degraded back": res.degraded},
        res.inputs_native,
        title="|SR degraded back - input|",
    )
    figures.band_bars(
        figdir / "consistency_bands.png",
        {"SR vs input": res.bands},
        ("psnr", "r2", "ssim"),
        title="Per-band consistency",
    )
    figures.maps_figure(
        figdir / "consistency_maps.png",
        {g: res.maps[g] for g in res.maps},
        ("reflectance", "spectral"),
        title="Per-pixel consistency maps (LR grid of each group)",
    )
    lines += [
        "![crops](figures/consistency_crops.png)",
        "",
        "![errors](figures/consistency_errors.png)",
        "",
        "![bands](figures/consistency_bands.png)",
        "",
        "![maps](figures/consistency_maps.png)",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    payload = {
        "protocol": "consistency",
        "product": res.product,
        "inputs": res.inputs,
        "command": command,
        "bands": res.bands,
        "groups": res.groups,
    }
    (out / "results.json").write_text(json.dumps(_jsonable(payload), indent=1))
    return path
