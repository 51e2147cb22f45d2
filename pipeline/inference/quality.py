"""Per-tile quality figures, computed while the tile's inputs and prediction are in memory (inference actor).

A super-resolved product cannot be compared with a 2.5 m truth, but it can be compared with what the sensor
measured: degraded back by the sensor model (`pipeline.models.sensor.wald_degrade`, the one the fusion's
back-projection and the Wald evaluation use; computed strided here, `wald_degrade_strided`, equal up to float
rounding: 0.175 -> 0.033 s per production tile on one core), each band group should reproduce its measured
bands. Per group
of a tile's core (not its halo, so the tiles' figures partition the AOI):

- `l1_<group>`: mean |D(prediction) - measured| over the valid measured values (reflectance units);
- `sam_<group>`: mean spectral angle (degrees) between D(prediction) and the measured spectrum, over the
  group's pixels valid in every band (the OpenSR-test consistency angle);
- `nodata_share`: share of the core's 12-band output values that are nodata;
- `spread_<group>`, `spread_mean`: mean per-pixel spread (std over the `--uncertainty` draws) over the valid
  output values (NaN without `--uncertainty`).

Low L1/SAM says the product is consistent with the measurement at the sensor's resolution; it says nothing
about the detail above it (that is what the spread hints at).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.bands import BAND_GROUPS, S2_BANDS
from pipeline.io.work_store import QUALITY_COLUMNS
from pipeline.models.sensor import wald_degrade_strided

__all__ = ["QUALITY_COLUMNS", "tile_quality"]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def tile_quality(
    product: np.ndarray,
    measured: tuple[np.ndarray, np.ndarray, np.ndarray],
    core: tuple[int, int, int, int],
    *,
    spread: np.ndarray | None = None,
) -> np.ndarray:
    """The figures of `QUALITY_COLUMNS` for one tile.

    Args:
        product: (12, 4H, 4W) float32 prediction of the tile's window, S2 order, NaN = nodata.
        measured: the window's measured groups (4,H,W), (6,H/2,W/2), (2,H/6,W/6), NaN = nodata.
        core: (y0, y1, x0, x1) of the tile's core in the window, 10 m pixels (multiples of 6).
        spread: (12, 4H, 4W) per-pixel std over the draws, or None.

    Returns:
        (len(QUALITY_COLUMNS),) float32; NaN where a figure has no valid pixel.
    """
    y0, y1, x0, x1 = core
    out: dict[str, float] = {}
    for group, meas in zip(BAND_GROUPS, measured):
        idx = [S2_BANDS.index(b) for b in group.bands]
        band = product[idx]
        # the sensor model needs a NaN-free image: nodata outputs sit where the measurement is nodata, so
        # fill them with 0 and leave those measured pixels (and their blurred neighbours' weight) out
        finite = np.isfinite(band)
        deg = wald_degrade_strided(
            torch.from_numpy(np.where(finite, band, 0.0))[None], group.factor_to_target
        )[0]
        k = group.factor_to_10m
        sl = (slice(None), slice(y0 // k, y1 // k), slice(x0 // k, x1 // k))
        d = deg.numpy()[sl].astype(np.float64)
        m = meas[sl].astype(np.float64)
        # a measured pixel counts when it is valid and its whole footprint in the product was valid
        valid = np.isfinite(m)
        if (
            not finite.all()
        ):  # (skipped in the common all-valid case: the blur is most of this function's cost)
            covered = wald_degrade_strided(
                torch.from_numpy(finite.astype(np.float32))[None], group.factor_to_target
            )
            valid &= covered[0].numpy()[sl] > 0.999
        out[f"l1_{group.name}"] = _mean(np.abs(d - m)[valid])
        every = valid.all(axis=0)
        a, b = d[:, every], m[:, every]
        norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
        ok = norms > 0
        cos = np.clip((a * b).sum(axis=0)[ok] / norms[ok], -1.0, 1.0)
        out[f"sam_{group.name}"] = _mean(np.degrees(np.arccos(cos)))
    f = product.shape[-1] // (measured[0].shape[-1])  # output pixels per 10 m pixel
    osl = (slice(None), slice(y0 * f, y1 * f), slice(x0 * f, x1 * f))
    core_out = product[osl]
    out["nodata_share"] = float(1.0 - np.isfinite(core_out).mean())
    for group in BAND_GROUPS:
        idx = [S2_BANDS.index(b) for b in group.bands]
        out[f"spread_{group.name}"] = _valid_mean(spread, core_out, osl, idx)
    out["spread_mean"] = _valid_mean(spread, core_out, osl, list(range(len(S2_BANDS))))
    return np.array([out[c] for c in QUALITY_COLUMNS], np.float32)


def _valid_mean(spread: np.ndarray | None, core_out: np.ndarray, osl: tuple, idx: list[int]) -> float:
    if spread is None:
        return float("nan")
    s = spread[osl][idx]
    return _mean(s[np.isfinite(core_out[idx]) & np.isfinite(s)].astype(np.float64))
