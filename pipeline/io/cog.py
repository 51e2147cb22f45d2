"""Export the Zarr mosaic as a 12-band Cloud-Optimized GeoTIFF, atomically.

uint16 (default): DN = round(reflectance * 10000), clipped to 1..65535 so that 0 stays nodata; band scale
1e-4 and offset 0 are set, so GDAL/rasterio users get reflectance back with the usual unscale. float32:
reflectance with NaN nodata. Both ZSTD with predictor 2 (3 for float), 512-px tiles, overviews.
The file is built locally under a temporary name and then renamed (or uploaded) into place.

Two ways to build it: `export_mosaic_cog` streams the Zarr mosaic through one process (for `--out s3://...`),
and for a local `--out` the strips path: Ray tasks encode each tile row of the mosaic into a compressed strip
GeoTIFF (`write_strip`) while the rest of the job still runs, and `assemble_cog` only stitches the strips
with a VRT into the COG (GDAL's COG driver, compression and overviews on all cores).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

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
from pipeline.tiling.grid import SR_FACTOR, TileLayout

SCALE = 1e-4
#: GDAL block cache of the COG stitch, MB. GDAL's default (5 % of RAM) lets the process grow by ~1 GB on a
#: big mosaic; the stitch reads each strip block once, so a small cache costs nothing.
STITCH_CACHE_MB = 256


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


def strip_bounds(layout: TileLayout, row: int) -> tuple[int, int]:
    """Output-pixel rows [y0, y1) of the mosaic covered by tile row `row`'s cores."""
    y0 = row * layout.core * SR_FACTOR
    return y0, min((row + 1) * layout.core, layout.height) * SR_FACTOR


def strip_path(strip_dir: str | Path, row: int) -> Path:
    return Path(strip_dir) / f"strip_{row:05d}.tif"


def write_strip(mosaic_url: str, strip_dir: str, layout: TileLayout, row: int, *, dtype: str) -> int:
    """Encode one tile row of the Zarr mosaic as a compressed strip GeoTIFF (atomic; skipped when present).

    Returns:
        The strip's height in output pixels.
    """
    dest = strip_path(strip_dir, row)
    y0, y1 = strip_bounds(layout, row)
    if dest.exists():
        return y1 - y0
    arr = zarr.open_array(mosaic_url, path=VARIABLE, mode="r", zarr_format=3)
    width = arr.shape[2]
    profile = {
        "driver": "GTiff",
        "height": y1 - y0,
        "width": width,
        "count": len(S2_BANDS),
        "dtype": dtype,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "compress": "ZSTD",
        "zstd_level": 1,  # an intermediate file: fast beats small
        "predictor": 2 if dtype == "uint16" else 3,
        "nodata": 0 if dtype == "uint16" else float("nan"),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(f".{os.getpid()}.part")
    step = layout.core * SR_FACTOR  # one tile core at a time: memory per core, not per AOI width
    with rasterio.open(part, "w", **profile) as dst:
        for x0 in range(0, width, step):
            x1 = min(width, x0 + step)
            dst.write(encode(arr[:, y0:y1, x0:x1], dtype), window=((0, y1 - y0), (x0, x1)))
    os.replace(part, dest)
    return y1 - y0


def strips_vrt(strip_dir: str | Path, grid: SceneGrid, layout: TileLayout, *, dtype: str) -> str:
    """A VRT (XML text) that stitches the strips of every tile row into the whole mosaic, with the band
    descriptions, nodata, scale/offset and tags the COG carries."""
    h, w = grid.output_shape()
    gdal_type = "UInt16" if dtype == "uint16" else "Float32"
    transform = (grid.left, TARGET_GSD_M, 0.0, grid.top, 0.0, -TARGET_GSD_M)
    crs = rasterio.crs.CRS.from_user_input(grid.crs).to_wkt()
    nodata = "0" if dtype == "uint16" else "nan"
    scale = SCALE if dtype == "uint16" else 1.0
    bands = []
    for i, band in enumerate(S2_BANDS, start=1):
        sources = []
        for row in range(layout.rows):
            y0, y1 = strip_bounds(layout, row)
            sources.append(
                f'<ComplexSource><SourceFilename relativeToVRT="0">{escape(str(strip_path(strip_dir, row)))}'
                f"</SourceFilename><SourceBand>{i}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{y1 - y0}"/>'
                f'<DstRect xOff="0" yOff="{y0}" xSize="{w}" ySize="{y1 - y0}"/>'
                f"<NODATA>{nodata}</NODATA></ComplexSource>"
            )
        bands.append(
            f'<VRTRasterBand dataType="{gdal_type}" band="{i}"><Description>{band}</Description>'
            f"<NoDataValue>{nodata}</NoDataValue><Offset>0</Offset><Scale>{scale}</Scale>"
            + "".join(sources)
            + "</VRTRasterBand>"
        )
    tags = (
        f'<Metadata><MDI key="reflectance_scale">{SCALE if dtype == "uint16" else 1}</MDI>'
        '<MDI key="software">difffusr</MDI></Metadata>'
    )
    return (
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{escape(crs)}</SRS>'
        f"<GeoTransform>{', '.join(repr(v) for v in transform)}</GeoTransform>{tags}"
        + "".join(bands)
        + "</VRTDataset>"
    )


def assemble_cog(
    strip_dir: str | Path, dest: str | Path, grid: SceneGrid, layout: TileLayout, *, dtype: str
) -> None:
    """Stitch the strips into a COG at a local path (all cores compress; overviews built here)."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    dest = Path(dest)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".cog-") as tmp:
        vrt = Path(tmp) / "mosaic.vrt"
        vrt.write_text(strips_vrt(strip_dir, grid, layout, dtype=dtype))
        staged = Path(tmp) / "cog.tif"
        with rasterio.Env(GDAL_CACHEMAX=STITCH_CACHE_MB):
            rasterio.shutil.copy(
                vrt,
                staged,
                driver="COG",
                compress="ZSTD",
                predictor=2 if dtype == "uint16" else 3,
                blocksize=512,
                overviews="AUTO",
                resampling="average",
                num_threads="ALL_CPUS",
                BIGTIFF="IF_SAFER",
            )
        os.replace(staged, dest)
