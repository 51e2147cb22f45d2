"""PNG figures of the evaluation reports (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipeline.bands import BAND_GROUPS, S2_BANDS

#: Bands drawn for each group: (R, G, B) composites; a single band is drawn in grey.
DISPLAY_BANDS: dict[str, tuple[str, ...]] = {
    "10m": ("B04", "B03", "B02"),
    "20m": ("B11", "B8A", "B05"),
    "60m": ("B09",),
}
_GROUP_TITLES = {"10m": "10 m: RGB (B04 B03 B02)", "20m": "20 m: B11 B8A B05", "60m": "60 m: B09"}


def _pick(stack: np.ndarray, group: str) -> np.ndarray:
    bands = next(g.bands for g in BAND_GROUPS if g.name == group)
    return stack[[bands.index(b) for b in DISPLAY_BANDS[group]]]


def _stretch_limits(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.nanpercentile(ref, 2, axis=(1, 2))
    hi = np.nanpercentile(ref, 98, axis=(1, 2))
    return lo[:, None, None], np.maximum(hi, lo + 1e-6)[:, None, None]


def _to_image(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    img = np.clip((x - lo) / (hi - lo), 0, 1)
    img = np.nan_to_num(img, nan=0.0)
    return img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)


def _nearest_up(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    fy, fx = shape[0] // x.shape[-2], shape[1] // x.shape[-1]
    return np.repeat(np.repeat(x, fy, axis=-2), fx, axis=-1)


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def crops_figure(
    path: Path, lr: dict, panels: dict[str, dict], reference: dict, *, title: str, lr_label: str = "LR input"
) -> None:
    """Side-by-side crops, one row per group: LR (nearest) | each panel | reference.

    Args:
        lr: group -> (C, h, w) LR stack (drawn upsampled by pixel repetition).
        panels: column title -> group -> (C, H, W) stack on the reference grid.
        reference: group -> (C, H, W) reference stack; sets the 2-98 % stretch of each row.
    """
    cols = [lr_label, *panels, "reference"]
    groups = [g.name for g in BAND_GROUPS]
    fig, axes = plt.subplots(
        len(groups), len(cols), figsize=(2.6 * len(cols), 2.7 * len(groups)), squeeze=False
    )
    for r, g in enumerate(groups):
        ref = _pick(reference[g], g)
        lo, hi = _stretch_limits(ref)
        images = (
            [_nearest_up(_pick(lr[g], g), ref.shape[-2:])] + [_pick(p[g], g) for p in panels.values()] + [ref]
        )
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(_to_image(img, lo, hi), cmap="gray", interpolation="nearest")
            _clean(ax)
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(_GROUP_TITLES[g], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def error_figure(path: Path, panels: dict[str, dict], reference: dict, *, title: str) -> None:
    """Absolute error |panel - reference| (mean over the group's bands), one row per group, shared scale per
    row."""
    groups = [g.name for g in BAND_GROUPS]
    cols = list(panels)
    fig, axes = plt.subplots(
        len(groups),
        len(cols),
        figsize=(2.8 * len(cols) + 0.6, 2.6 * len(groups)),
        squeeze=False,
        layout="constrained",
    )
    for r, g in enumerate(groups):
        errs = [np.nanmean(np.abs(p[g] - reference[g]), axis=0) for p in panels.values()]
        vmax = max(float(np.nanpercentile(e, 99)) for e in errs) or 1e-6
        for c, e in enumerate(errs):
            ax = axes[r, c]
            im = ax.imshow(e, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            _clean(ax)
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{g}: |error|", fontsize=8)
        fig.colorbar(im, ax=axes[r, :].tolist(), shrink=0.8, label="reflectance")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def band_bars(
    path: Path, scores: dict[str, dict[str, dict[str, float]]], metrics: tuple[str, ...], *, title: str
) -> None:
    """Grouped bar chart per band: one subplot per metric, one bar colour per series.

    Args:
        scores: series name -> band id -> metric -> value.
        metrics: metric keys to draw (one subplot each).
    """
    series = list(scores)
    x = np.arange(len(S2_BANDS))
    width = 0.8 / max(1, len(series))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, 2.6 * len(metrics)), squeeze=False)
    for r, metric in enumerate(metrics):
        ax = axes[r, 0]
        for i, name in enumerate(series):
            vals = [scores[name][b][metric] for b in S2_BANDS]
            ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
        ax.set_xticks(x, S2_BANDS, fontsize=8)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
        finite = [scores[n][b][metric] for n in series for b in S2_BANDS if np.isfinite(scores[n][b][metric])]
        if finite and metric in ("psnr", "ssim", "r2", "cc"):
            lo, hi = min(finite), max(finite)
            ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    axes[0, 0].legend(fontsize=8, ncol=len(series))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def maps_figure(
    path: Path,
    maps: dict[str, dict[str, np.ndarray]],
    keys: tuple[str, ...],
    *,
    title: str,
    vmax: float | None = None,
) -> None:
    """Per-pixel score maps: one row per series, one column per map key."""
    rows = list(maps)
    fig, axes = plt.subplots(
        len(rows),
        len(keys),
        figsize=(2.7 * len(keys) + 0.6, 2.6 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for r, name in enumerate(rows):
        for c, key in enumerate(keys):
            ax = axes[r, c]
            m = maps[name][key]
            top = (
                vmax
                if vmax is not None
                else (float(np.nanpercentile(m, 99)) if np.isfinite(m).any() else 1.0)
            )
            im = ax.imshow(m, cmap="viridis", vmin=0, vmax=top or 1e-6, interpolation="nearest")
            _clean(ax)
            if r == 0:
                ax.set_title(key, fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.75)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)
