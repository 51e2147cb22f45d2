"""DN -> surface reflectance for each item, from the item's own metadata. Pure.

Rules, first match wins:
1. The asset's `raster:bands[0].scale/offset` (STAC raster v1), or `raster:scale/raster:offset` (STAC 1.1).
2. Otherwise scale 1e-4 and, for processing baseline >= 04.00, offset -0.1 (the -1000 DN BOA_ADD_OFFSET),
   unless `earthsearch:boa_offset_applied` is true (the provider already removed it).
DN 0 is nodata in every Sentinel-2 L2A product; it stays nodata (NaN) after scaling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

NODATA_DN = 0
DEFAULT_SCALE = 1e-4
BOA_OFFSET = -0.1


@dataclass(frozen=True, kw_only=True)
class Radiometry:
    """reflectance = DN * scale + offset; DN == nodata -> NaN.

    Attributes:
        scale: reflectance per DN.
        offset: reflectance added after scaling (-0.1 for baselines >= 04.00 not yet corrected).
        nodata: the DN that marks no data.
        source: which rule produced the values ("raster:bands", "raster:scale", "baseline>=04.00", "default").
    """

    scale: float
    offset: float
    nodata: float = NODATA_DN
    source: str = "default"


def processing_baseline(item: dict[str, Any]) -> float | None:
    """The item's processing baseline as a number (e.g. 4.0), from any provider's property, or None."""
    props = item.get("properties", {})
    for key in ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline"):
        if props.get(key) is not None:
            try:
                return float(str(props[key]))
            except ValueError:
                pass
    match = re.search(r"_N(\d{2})(\d{2})_", str(item.get("id", "")) + str(props.get("s2:product_uri", "")))
    return float(f"{match.group(1)}.{match.group(2)}") if match else None


def resolve_radiometry(item: dict[str, Any], asset_key: str) -> Radiometry:
    """Scale/offset/nodata for one band asset of one item."""
    asset = item.get("assets", {}).get(asset_key, {})
    nodata = asset.get("nodata", asset.get("raster:nodata"))
    rb = (asset.get("raster:bands") or [{}])[0]
    nodata = rb.get("nodata", nodata)
    nodata = NODATA_DN if nodata is None else nodata
    if "scale" in rb or "offset" in rb:
        return Radiometry(scale=float(rb.get("scale", 1.0)), offset=float(rb.get("offset", 0.0)), nodata=nodata,
                          source="raster:bands")
    if "raster:scale" in asset or "raster:offset" in asset:
        return Radiometry(scale=float(asset.get("raster:scale", 1.0)), offset=float(asset.get("raster:offset", 0.0)),
                          nodata=nodata, source="raster:scale")
    baseline = processing_baseline(item)
    applied = bool(item.get("properties", {}).get("earthsearch:boa_offset_applied", False))
    if baseline is not None and baseline >= 4.0 and not applied:
        return Radiometry(scale=DEFAULT_SCALE, offset=BOA_OFFSET, nodata=nodata, source="baseline>=04.00")
    return Radiometry(scale=DEFAULT_SCALE, offset=0.0, nodata=nodata, source="default")


def to_reflectance(dn: np.ndarray, radiometry: Radiometry) -> np.ndarray:
    """Convert DNs to float32 reflectance; nodata DNs (and NaN) become NaN."""
    dn = np.asarray(dn)
    out = dn.astype(np.float32) * np.float32(radiometry.scale) + np.float32(radiometry.offset)
    out[(dn == radiometry.nodata) | ~np.isfinite(dn.astype(np.float32))] = np.nan
    return out
