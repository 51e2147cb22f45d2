"""DN -> surface reflectance: the one rule every reader (STAC items, scene folders, training) applies. Pure.

A `Radiometry` (scale, offset, nodata) is resolved per band from the input's own metadata, first match wins:
1. Declared scale/offset: the STAC asset's `raster:bands[0].scale/offset` (STAC raster v1) or
   `raster:scale/raster:offset` (STAC 1.1); a GeoTIFF's own band scale/offset tags.
2. Otherwise, for integer DNs, scale 1e-4 and, for processing baseline >= 04.00, offset -0.1 (the -1000 DN
   BOA_ADD_OFFSET), unless `earthsearch:boa_offset_applied` is true (the provider already removed it).
   Float GeoTIFFs without tags are reflectance already (scale 1, offset 0).
DN 0 is nodata in every Sentinel-2 L2A product unless the input declares another nodata value; it stays
nodata (NaN) after scaling. `to_reflectance` is the one conversion.
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
        nodata: the DN that marks no data (None: none; NaN DNs are nodata anyway).
        source: which rule produced the values ("raster:bands", "raster:scale", "geotiff", "baseline>=04.00",
            "default", "float").
    """

    scale: float
    offset: float
    nodata: float | None = NODATA_DN
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
        return Radiometry(
            scale=float(rb.get("scale", 1.0)),
            offset=float(rb.get("offset", 0.0)),
            nodata=nodata,
            source="raster:bands",
        )
    if "raster:scale" in asset or "raster:offset" in asset:
        return Radiometry(
            scale=float(asset.get("raster:scale", 1.0)),
            offset=float(asset.get("raster:offset", 0.0)),
            nodata=nodata,
            source="raster:scale",
        )
    applied = bool(item.get("properties", {}).get("earthsearch:boa_offset_applied", False))
    return _default_radiometry(None if applied else processing_baseline(item), nodata)


def _default_radiometry(baseline: float | None, nodata: float | None) -> Radiometry:
    """Rule 2 for integer DNs: 1e-4, and the BOA offset from baseline 04.00 on."""
    if baseline is not None and baseline >= 4.0:
        return Radiometry(scale=DEFAULT_SCALE, offset=BOA_OFFSET, nodata=nodata, source="baseline>=04.00")
    return Radiometry(scale=DEFAULT_SCALE, offset=0.0, nodata=nodata, source="default")


def resolve_file_radiometry(
    *, integer: bool, scale: float, offset: float, nodata: float | None, baseline: float | None = None
) -> Radiometry:
    """Scale/offset/nodata of one band of a GeoTIFF, from its own tags (the rules of the module docstring).

    Args:
        integer: the band holds integer DNs (False: float).
        scale, offset: the band's scale/offset tags (GDAL reports 1 and 0 when the file declares none).
        nodata: the file's nodata value, or None when it declares none (integer DN 0 is then nodata).
        baseline: processing baseline of the product when known (e.g. from a `_N0400_` product name).
    """
    if scale != 1.0 or offset != 0.0:
        return Radiometry(
            scale=scale,
            offset=offset,
            nodata=NODATA_DN if nodata is None and integer else nodata,
            source="geotiff",
        )
    if not integer:
        return Radiometry(scale=1.0, offset=0.0, nodata=nodata, source="float")
    return _default_radiometry(baseline, NODATA_DN if nodata is None else nodata)


def to_reflectance(dn: np.ndarray, radiometry: Radiometry) -> np.ndarray:
    """Convert DNs to float32 reflectance, DN * scale + offset; nodata DNs (and NaN) become NaN.

    Computed in float64 and rounded once to float32, so DN * 1e-4 equals the correctly rounded DN / 10000
    for every uint16 DN (float32 arithmetic would differ in the last bit for about 30 % of them).
    """
    dn = np.asarray(dn)
    out = dn.astype(np.float64) * radiometry.scale + radiometry.offset
    invalid = ~np.isfinite(out)
    if radiometry.nodata is not None and not np.isnan(radiometry.nodata):
        invalid |= dn == radiometry.nodata
    out[invalid] = np.nan
    return out.astype(np.float32)
