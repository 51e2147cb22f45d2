"""Export the Zarr mosaic as a 12-band Cloud-Optimized GeoTIFF, atomically.

uint16 (default): DN = round(reflectance * 10000), clipped to 1..65535 so that 0 stays nodata; band scale
1e-4 and offset 0 are set, so GDAL/rasterio users get reflectance back with the usual unscale. float32:
reflectance with NaN nodata. Both ZSTD with predictor 2 (3 for float), 512-px tiles, overviews.
The file is built locally under a temporary name and then renamed (or uploaded) into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import zarr
from rasterio.transform import Affine

from pipeline.bands import S2_BANDS, TARGET_GSD_M
from pipeline.config import DTYPES
from pipeline.errors import ConfigError
from pipeline.io.grid import SceneGrid
from pipeline.io.mosaic_store import VARIABLE

SCALE = 1e-4


def encode(block: np.ndarray, dtype: str) -> np.ndarray:
    """Reflectance (NaN nodata) -> the file's values."""
    if dtype == "float32":
        return block.astype(np.float32)
    dn = np.clip(np.rint(np.nan_to_num(block, nan=0.0) / SCALE), 1, 65535).astype(np.uint16)
    dn[~np.isfinite(block)] = 0
    return dn


def write_geotiff(
    path: str | Path,
    read_rows,
    *,
    height: int,
    width: int,
    transform: Affine,
    crs: str,
    dtype: str = "uint16",
    row_block: int = 512,
) -> None:
    """Write a COG at `path` from a row-block reader `read_rows(y0, y1) -> (12, y1-y0, width)` reflectance."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".cog-") as tmp:
        plain = Path(tmp) / "plain.tif"
        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": len(S2_BANDS),
            "dtype": dtype,
            "crs": crs,
            "transform": transform,
            "nodata": 0 if dtype == "uint16" else float("nan"),
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "ZSTD",
            "BIGTIFF": "IF_SAFER",
        }
        with rasterio.open(plain, "w", **profile) as dst:
            for y0 in range(0, height, row_block):
                y1 = min(height, y0 + row_block)
                dst.write(encode(read_rows(y0, y1), dtype), window=((y0, y1), (0, width)))
            for i, band in enumerate(S2_BANDS, start=1):
                dst.set_band_description(i, band)
            if dtype == "uint16":
                dst.scales = [SCALE] * len(S2_BANDS)
                dst.offsets = [0.0] * len(S2_BANDS)
            dst.update_tags(reflectance_scale=str(SCALE) if dtype == "uint16" else "1", software="difffusr")
        staged = Path(tmp) / "cog.tif"
        rasterio.shutil.copy(
            plain,
            staged,
            driver="COG",
            compress="ZSTD",
            predictor=2 if dtype == "uint16" else 3,
            blocksize=512,
            overviews="AUTO",
            resampling="average",
            BIGTIFF="IF_SAFER",
        )
        os.replace(staged, path)


def export_mosaic_cog(mosaic_url: str, dest: str | Path, grid: SceneGrid, *, dtype: str = "uint16") -> None:
    """Stream the Zarr mosaic into a COG at a local path (upload is the caller's business)."""
    arr = zarr.open_array(mosaic_url, path=VARIABLE, mode="r", zarr_format=3)
    h, w = arr.shape[-2:]
    write_geotiff(
        dest,
        lambda y0, y1: arr[:, y0:y1, :],
        height=h,
        width=w,
        transform=Affine(TARGET_GSD_M, 0, grid.left, 0, -TARGET_GSD_M, grid.top),
        crs=grid.crs,
        dtype=dtype,
    )
