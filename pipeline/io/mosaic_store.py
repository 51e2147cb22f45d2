"""The analysis-ready 2.5 m mosaic as a Zarr v3 store that xarray opens directly.

Written template-first (metadata and coordinates, no pixels), then one disjoint region write per tile core;
chunks are exactly the cores, so region writes never share a chunk.

Layout: variable `reflectance` (band, y, x) in the run's `--dtype` (`io.reflectance`): uint16 digital
numbers with CF `scale_factor` 1e-4 and `_FillValue` 0, which xarray decodes to reflectance with NaN nodata,
or float32 reflectance with NaN nodata; CF `grid_mapping` = `spatial_ref`
(CRS WKT + GDAL GeoTransform, which rioxarray/odc-geo/QGIS read); `band` is an integer index with the band
ids in the `band_names` attribute (Zarr v3 has no string coordinate spec). With `--uncertainty K` a second
variable `uncertainty` (same dims and chunks, float32, NaN nodata) holds the per-pixel spread: the std of the
K draws' fused reflectance, blended across tile overlaps like the product.
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from pyproj import CRS

from pipeline.bands import S2_BANDS, TARGET_GSD_M
from pipeline.io.grid import SceneGrid
from pipeline.io.reflectance import SCALE, encode
from pipeline.tiling.grid import SR_FACTOR, TileKey, TileLayout

VARIABLE = "reflectance"
#: The per-pixel spread of `--uncertainty` draws (reflectance units), beside VARIABLE.
UNCERTAINTY = "uncertainty"


def mosaic_template(
    grid: SceneGrid, layout: TileLayout, attrs: dict, *, uncertainty: bool = False, dtype: str = "uint16"
) -> xr.Dataset:
    """A lazy Dataset with the mosaic's final coordinates, chunked one chunk per tile core, its reflectance
    stored as `dtype` (and the float32 `uncertainty` variable when asked)."""
    h, w = grid.output_shape()
    chunk = layout.core * SR_FACTOR
    gsd = TARGET_GSD_M
    x = grid.left + gsd * (np.arange(w) + 0.5)
    y = grid.top - gsd * (np.arange(h) + 0.5)
    data = da.full((len(S2_BANDS), h, w), np.nan, dtype=np.float32, chunks=(len(S2_BANDS), chunk, chunk))
    crs = CRS.from_user_input(grid.crs)
    spatial_ref = xr.DataArray(
        np.int32(0),
        attrs={
            **crs.to_cf(),
            "crs_wkt": crs.to_wkt(),
            "spatial_ref": crs.to_wkt(),
            "GeoTransform": " ".join(str(v) for v in (grid.left, gsd, 0.0, grid.top, 0.0, -gsd)),
        },
    )

    def variable(long_name: str) -> tuple:
        meta = {
            "grid_mapping": "spatial_ref",
            "units": "1",
            "long_name": long_name,
            "band_names": list(S2_BANDS),
        }
        return ("band", "y", "x"), data, meta

    variables = {VARIABLE: variable("surface reflectance")}
    if uncertainty:
        variables[UNCERTAINTY] = variable(
            "spread of the surface reflectance over the sampler's draws (std), not an error bar"
        )
    ds = xr.Dataset(
        {**variables, "spatial_ref": spatial_ref},
        coords={
            "band": np.arange(len(S2_BANDS), dtype=np.int16),
            "y": ("y", y, {"units": "m"}),
            "x": ("x", x, {"units": "m"}),
        },
        attrs=attrs,
    )
    chunks = (len(S2_BANDS), chunk, chunk)
    for name in variables:
        ds[name].encoding = {
            "chunks": chunks,
            "_FillValue": np.float32(np.nan),
            "compressors": (zarr.codecs.ZstdCodec(level=3),),
        }
    if dtype == "uint16":
        # Digital numbers as Sentinel-2 L2A stores them: a third of the float32 store's bytes (byte shuffle
        # + zstd; 139 -> ~35 MB for 25 tiles), and no more precision than the inputs had.
        ds[VARIABLE].encoding = {
            "chunks": chunks,
            "dtype": "uint16",
            "scale_factor": SCALE,
            "_FillValue": np.uint16(0),
            "compressors": (zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),),
        }
    return ds


def create_mosaic_store(
    url: str,
    grid: SceneGrid,
    layout: TileLayout,
    attrs: dict,
    *,
    uncertainty: bool = False,
    dtype: str = "uint16",
) -> None:
    """Write the template (metadata + coordinates) unless a store with this grid (and variables) exists; an
    existing store keeps its dtype (cores already written in it stay valid; `write_core` encodes for it)."""
    try:
        existing = xr.open_zarr(url, zarr_format=3, consolidated=False)  # written without (below)
        if (
            existing.sizes.get("y") == grid.height * SR_FACTOR
            and existing.sizes.get("x") == grid.width * SR_FACTOR
            and VARIABLE in existing.data_vars  # a run killed while writing the template left it without
            and (UNCERTAINTY in existing.data_vars) == uncertainty
        ):
            return
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        pass
    mosaic_template(grid, layout, attrs, uncertainty=uncertainty, dtype=dtype).to_zarr(
        url, mode="w", compute=False, zarr_format=3, consolidated=False
    )


@functools.lru_cache(maxsize=8)
def _mosaic_array(url: str, variable: str = VARIABLE) -> zarr.Array:
    """A mosaic variable opened once per worker process (its metadata is fixed once the template exists)."""
    return zarr.open_array(url, path=variable, mode="r+", zarr_format=3)


def write_core(
    url: str, layout: TileLayout, key: TileKey, block: np.ndarray, *, variable: str = VARIABLE
) -> None:
    """Write one tile core's (12, h, w) reflectance block into its own region of `variable`, encoded for
    the variable's stored dtype."""
    y0, y1, x0, x1 = layout.core_bounds(key)
    arr = _mosaic_array(url, variable)
    stored = encode(block, "uint16" if arr.dtype == np.uint16 else "float32")
    arr[:, y0 * SR_FACTOR : y1 * SR_FACTOR, x0 * SR_FACTOR : x1 * SR_FACTOR] = stored
