"""The per-tile quality figures of a job, summarised for the manifest and the STAC item, and the QA PNG.

The figures are computed per tile by the inference actor (`pipeline.inference.quality`) and stored in the
work store's `quality` array; the export reads that array once (rows x cols x a dozen floats) and turns it
into a summary, a per-tile table and `quality.png`. Pure numpy/PIL: arrays in, dicts and images out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipeline.io.work_store import QUALITY_COLUMNS, QUALITY_UNITS

#: The figures drawn in quality.png: each group's degrade-back L1 (the consistency with the measurement).
PNG_COLUMNS: tuple[str, ...] = ("l1_10m", "l1_20m", "l1_60m")
#: Viridis at five stops (matplotlib's values): low = dark blue, high = yellow.
_VIRIDIS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)
_NODATA_RGB = (96, 96, 96)


def _round(value: float) -> float | None:
    """JSON-safe value: None for NaN, 4 significant digits otherwise."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.4g}")


def quality_summary(figures: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per figure, over the tiles that have it: count, mean, median, 95th percentile and max (and the unit).

    Args:
        figures: (rows, cols, Q) in `QUALITY_COLUMNS` order; NaN = the tile has no such figure.
    """
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(QUALITY_COLUMNS):
        values = figures[..., i].astype(np.float64).ravel()
        values = values[np.isfinite(values)]
        stats: dict[str, Any] = {"tiles": int(values.size), "unit": QUALITY_UNITS[name]}
        if values.size:
            stats.update(
                mean=_round(values.mean()),
                p50=_round(float(np.percentile(values, 50))),
                p95=_round(float(np.percentile(values, 95))),
                max=_round(values.max()),
            )
        out[name] = stats
    return out


def tile_table(figures: np.ndarray) -> dict[str, Any]:
    """The per-tile figures as a compact table: columns (row, col, *QUALITY_COLUMNS), one row per tile that
    was super-resolved (tiles without data have no figures and no row)."""
    rows = []
    for r, c in np.argwhere(np.isfinite(figures).any(axis=-1)):
        rows.append([int(r), int(c), *(_round(float(v)) for v in figures[r, c])])
    return {"columns": ["row", "col", *QUALITY_COLUMNS], "units": dict(QUALITY_UNITS), "tiles": rows}


def _colour(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(h, w) values -> (h, w, 3) uint8 viridis; NaN -> grey."""
    t = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    pos = np.nan_to_num(t) * (len(_VIRIDIS) - 1)
    i = np.minimum(pos.astype(int), len(_VIRIDIS) - 2)
    frac = (pos - i)[..., None]
    rgb = (_VIRIDIS[i] * (1 - frac) + _VIRIDIS[i + 1] * frac).round().astype(np.uint8)
    rgb[~np.isfinite(values)] = _NODATA_RGB
    return rgb


def quality_image(figures: np.ndarray, *, panel_side: int = 256) -> Image.Image:
    """One heat-map panel per `PNG_COLUMNS` figure over the tile grid (north up, a cell per tile), each with
    its own colour scale (0 to the 98th percentile of its tiles), labelled; grey = no data."""
    rows, cols = figures.shape[:2]
    cell = max(1, panel_side // max(rows, cols))
    ph, pw = rows * cell, cols * cell
    header, footer, gap = 16, 28, 8
    width = len(PNG_COLUMNS) * (pw + gap) + gap
    image = Image.new("RGB", (max(width, 3 * 120), header + ph + footer), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for n, name in enumerate(PNG_COLUMNS):
        values = figures[..., QUALITY_COLUMNS.index(name)].astype(np.float64)
        finite = values[np.isfinite(values)]
        hi = float(np.percentile(finite, 98)) if finite.size else 1.0
        panel = np.repeat(np.repeat(_colour(values, 0.0, hi), cell, axis=0), cell, axis=1)
        x0 = gap + n * (pw + gap)
        image.paste(Image.fromarray(panel, "RGB"), (x0, header))
        draw.text((x0, 2), f"degrade-back L1 {name[3:]}", fill=(0, 0, 0))
        bar = _colour(np.linspace(0.0, hi, max(pw, 2))[None, :].repeat(6, axis=0), 0.0, hi)
        image.paste(Image.fromarray(bar, "RGB"), (x0, header + ph + 2))
        draw.text((x0, header + ph + 10), f"0 .. {hi:.2g}", fill=(0, 0, 0))
    return image


def write_quality_png(figures: np.ndarray, dest: str | Path) -> None:
    """Save `quality_image` as a PNG."""
    quality_image(figures).save(dest, format="PNG")


def item_properties(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`difffusr:` properties of the STAC item: the mean of each figure over the tiles, and the summary."""
    props: dict[str, Any] = {
        f"difffusr:{name}_mean": stats.get("mean") for name, stats in summary.items() if stats["tiles"]
    }
    props["difffusr:quality"] = summary
    return props
