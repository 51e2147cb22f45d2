"""The STAC item describing an output mosaic, and the run manifest. Pure: dicts in, dicts out."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from pyproj import Transformer

from pipeline import __version__
from pipeline.bands import NATIVE_GSD_M, S2_BANDS, TARGET_GSD_M
from pipeline.io.grid import SceneGrid
from pipeline.io.reflectance import SCALE

_PACKAGES = (
    "torch",
    "ray",
    "odc-stac",
    "odc-geo",
    "pystac-client",
    "xarray",
    "dask",
    "zarr",
    "s3fs",
    "rasterio",
    "numpy",
)


def versions() -> dict[str, str]:
    """Versions of difffusr, Python, GDAL and the key packages."""
    out = {"difffusr": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:
        pass
    return out


def footprint_lonlat(grid: SceneGrid) -> dict[str, Any]:
    """GeoJSON polygon of the grid's outline in EPSG:4326 (densified edges)."""
    left, bottom, right, top = grid.bounds
    n = 8
    xs = (
        [left + (right - left) * i / n for i in range(n)]
        + [right] * n
        + [right - (right - left) * i / n for i in range(n)]
        + [left] * n
    )
    ys = (
        [top] * n
        + [top - (top - bottom) * i / n for i in range(n)]
        + [bottom] * n
        + [bottom + (top - bottom) * i / n for i in range(n)]
    )
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat)]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def output_item(
    *,
    fingerprint: str,
    grid: SceneGrid,
    start: datetime,
    end: datetime,
    method: str,
    dtype: str,
    inputs: list[dict[str, Any]],
    uncertainty: bool = False,
    quality: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    footprint: SceneGrid | None = None,
) -> dict[str, Any]:
    """A STAC 1.0 item for the mosaic (COG, Zarr and quicklook assets; derived_from links to the inputs).

    Args:
        uncertainty: the job wrote `uncertainty.tif` (an asset, float32 spread).
        quality: `difffusr:` quality properties (`mosaic.quality.item_properties`); adds the QA PNG asset.
        provenance: `difffusr:` provenance properties (inputs and baselines, weights' hashes, sampler, code).
        footprint: where the rasters hold data, when not all of `grid` (a zone-anchored job: its AOI).
    """
    geometry = footprint_lonlat(footprint or grid)
    ring = geometry["coordinates"][0]
    bbox = [
        min(p[0] for p in ring),
        min(p[1] for p in ring),
        max(p[0] for p in ring),
        max(p[1] for p in ring),
    ]
    epsg = int(grid.crs.split(":")[1]) if grid.crs.upper().startswith("EPSG:") else None
    h, w = grid.output_shape()
    eo_bands = [
        {"name": b, "description": f"Sentinel-2 {b} (native {NATIVE_GSD_M[b]} m) at {TARGET_GSD_M} m"}
        for b in S2_BANDS
    ]
    raster_bands = [
        {
            "data_type": dtype,
            "nodata": 0 if dtype == "uint16" else "nan",
            "scale": SCALE if dtype == "uint16" else 1.0,
            "offset": 0.0,
            "spatial_resolution": TARGET_GSD_M,
            "unit": "reflectance",
        }
        for _ in S2_BANDS
    ]
    links = [{"rel": "derived_from", "href": _self_href(i), "title": i["id"]} for i in inputs]
    extra_assets: dict[str, Any] = {}
    if uncertainty:
        extra_assets["uncertainty"] = {
            "href": "./uncertainty.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": "per-pixel spread (std over the sampler's draws) of the 12 bands; not an error bar",
            "roles": ["data", "quality"],
            "eo:bands": eo_bands,
            "raster:bands": [
                {
                    "data_type": "float32",
                    "nodata": "nan",
                    "scale": 1.0,
                    "offset": 0.0,
                    "spatial_resolution": TARGET_GSD_M,
                    "unit": "reflectance",
                }
                for _ in S2_BANDS
            ],
        }
    if quality is not None:
        extra_assets["quality"] = {
            "href": "./quality.png",
            "type": "image/png",
            "title": "per-tile degrade-back consistency (L1 per band group) over the AOI",
            "roles": ["overview", "quality"],
        }
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": f"difffusr-{fingerprint}",
        "geometry": geometry,
        "bbox": bbox,
        "properties": {
            "datetime": None,
            "start_datetime": start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "end_datetime": end.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "gsd": TARGET_GSD_M,
            "proj:epsg": epsg,
            "proj:shape": [h, w],
            "proj:transform": [TARGET_GSD_M, 0.0, grid.left, 0.0, -TARGET_GSD_M, grid.top],
            "constellation": "sentinel-2",
            "difffusr:method": method,
            "difffusr:composite": "per-pixel median of cloud-free observations",
            "processing:software": {"difffusr": __version__},
            **(provenance or {}),
            **(quality or {}),
        },
        "links": links,
        "assets": {
            "mosaic": {
                "href": "./mosaic.tif",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "title": "12-band 2.5 m mosaic (COG)",
                "roles": ["data"],
                "eo:bands": eo_bands,
                "raster:bands": raster_bands,
            },
            "zarr": {
                "href": "./mosaic.zarr",
                "type": "application/vnd+zarr",
                "title": "12-band 2.5 m mosaic (Zarr v3)",
                "roles": ["data"],
                "eo:bands": eo_bands,
                "raster:bands": raster_bands,  # the same stored values as the COG (`--dtype`)
            },
            "quicklook": {
                "href": "./quicklook.png",
                "type": "image/png",
                "title": "true colour quicklook",
                "roles": ["overview"],
            },
            **extra_assets,
        },
    }


def _self_href(item: dict[str, Any]) -> str:
    for link in item.get("links", []):
        if link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    return str(item["id"])
