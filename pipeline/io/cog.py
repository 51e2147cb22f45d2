"""Export the Zarr mosaic as a 12-band Cloud-Optimized GeoTIFF, atomically.

uint16 (default): DN = round(reflectance * 10000), clipped to 1..65535 so that 0 stays nodata; band scale
1e-4 and offset 0 are set, so GDAL/rasterio users get reflectance back with the usual unscale. float32:
reflectance with NaN nodata. Both ZSTD with predictor 2 (3 for float), 512-px tiles, overviews.
The file is built locally under a temporary name and then renamed (or uploaded) into place.

A job's COG is built from strips: Ray tasks encode each tile row of the mosaic into compressed strip GeoTIFFs
(`write_strip`, full resolution and every overview level) while the rest of the job still runs, and one task
stitches them with a VRT into the COG (`assemble_cog`: GDAL's COG driver, overviews copied, all cores). The
strips live next to the outputs, on local disk or in the object store (`--out s3://...`: each strip is
uploaded whole, and the stitch task fetches them, stitches and uploads the COG itself, `assemble_cog_to`), so
the export never runs in the driver. `write_geotiff` writes a COG from any row reader in one process
(`difffusr superres`).

The `--uncertainty` layer (`uncertainty.tif`) goes the same way from the mosaic's `uncertainty` variable,
always float32 (spread in reflectance units, NaN nodata): the spread of a well-constrained band is often below
1e-4, which uint16 with the product's scale would round to 0 or 1 DN.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
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
from pipeline.io.mosaic_store import UNCERTAINTY, VARIABLE
from pipeline.io.outputs import OutputDir
from pipeline.io.reflectance import SCALE, decode, encode
from pipeline.tiling.grid import SR_FACTOR, TileLayout

#: File type of the uncertainty layer (see the module docstring).
UNCERTAINTY_DTYPE = "float32"
#: GeoTIFF tags of the uncertainty layer.
UNCERTAINTY_TAGS = {
    "quantity": "per-pixel spread (std) of the reflectance over the sampler's draws; not an error bar",
}
#: Strip folder of the uncertainty layer inside the product's strip folder.
UNCERTAINTY_STRIPS = "uncertainty"
#: GDAL block cache of the COG stitch, MB. The stitch reads each strip block once (strips are a whole
#: number of 128-px blocks tall, the COG's 512-px blocks too), so a cache saves it nothing and costs its
#: size: 420-tile mosaic, 28.2 s with 16 MB, 29.8 s with 64 MB (+64 MiB resident). GDAL's default: 5 % of RAM.
STITCH_CACHE_MB = 16
#: Strip datasets the stitch's VRT keeps open at once. GDAL's default pool (100) keeps ~1 MiB per open
#: strip, so the stitch grew with the mosaic's tile rows (issue 12: +204 MiB at 21 rows, +104 at 5); with 8
#: it is +131 vs +116 MiB at the same speed (the COG writer walks the rows in order, each strip once).
STITCH_OPEN_STRIPS = 8
#: GDAL block cache of a strip task, MB (see `write_strip`).
STRIP_CACHE_MB = 16


def gdal_env(*, cache_mb: int, **options) -> rasterio.Env:
    """A `rasterio.Env` with a GDAL block cache of `cache_mb` MB (and GDAL config `options`).

    rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, which counts bytes, whereas GDAL's own
    config option counts MB below 100,000: `rasterio.Env(GDAL_CACHEMAX=16)` is a 16-*byte* cache.
    """
    return rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20, **options)


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
    tags: dict[str, str] | None = None,
) -> None:
    """Write a COG at `path` from a row-block reader `read_rows(y0, y1) -> (12, y1-y0, width)` reflectance
    (`tags`: extra GeoTIFF tags)."""
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
            dst.update_tags(
                reflectance_scale=str(SCALE) if dtype == "uint16" else "1",
                software="difffusr",
                **(tags or {}),
            )
        staged = Path(tmp) / "cog.tif"
        _copy_as_cog(plain, staged, dtype=dtype, overviews="AUTO", resampling="average")
        os.replace(staged, path)


def strip_bounds(layout: TileLayout, row: int) -> tuple[int, int]:
    """Output-pixel rows [y0, y1) of the mosaic covered by tile row `row`'s cores."""
    y0 = row * layout.core * SR_FACTOR
    return y0, min((row + 1) * layout.core, layout.height) * SR_FACTOR


def strip_name(row: int, level: int = 0) -> str:
    """File name of tile row `row`'s strip at overview level `level` (0 = full resolution, k = 1 / 2^k)."""
    return f"strip_{row:05d}.tif" if level == 0 else f"strip_{row:05d}_ovr{level}.tif"


def strip_path(strip_dir: str | Path, row: int, level: int = 0) -> Path:
    """Strip GeoTIFF of tile row `row` at overview level `level` in a local strip folder."""
    return Path(strip_dir) / strip_name(row, level)


def overview_levels(height: int, width: int, layout: TileLayout, blocksize: int = 512) -> int:
    """Overview levels of the COG: halve until the longest side fits one block (GDAL's AUTO rule), at most as
    many times as a core's output side halves exactly (each strip's overviews then tile the overview)."""
    core_out, levels = layout.core * SR_FACTOR, 0
    while (
        max(-(-height // 2**levels), -(-width // 2**levels)) > blocksize and core_out % 2 ** (levels + 1) == 0
    ):
        levels += 1
    return levels


def halve(block: np.ndarray) -> np.ndarray:
    """(C, h, w) reflectance -> (C, ceil(h/2), ceil(w/2)): the mean of the valid pixels of each 2 x 2 block
    (NaN where none is valid), as GDAL's "average" overview resampling with nodata."""
    c, h, w = block.shape
    padded = np.full((c, h + h % 2, w + w % 2), np.nan, np.float32)
    padded[:, :h, :w] = block
    quads = padded.reshape(c, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    valid = np.isfinite(quads)
    total = np.where(valid, quads, 0.0).sum(axis=(2, 4))
    count = valid.sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def write_strips(
    mosaic_url: str, strip_dir: str, layout: TileLayout, row: int, *, dtype: str, uncertainty: bool = False
) -> int:
    """`write_strip` of the product, and with `uncertainty` of the uncertainty layer (float32) into
    `strip_dir`/uncertainty: one task per tile row for both."""
    if uncertainty:
        write_strip(
            mosaic_url,
            f"{strip_dir.rstrip('/')}/{UNCERTAINTY_STRIPS}",  # a URL: no Path, which folds s3:// to s3:/
            layout,
            row,
            dtype=UNCERTAINTY_DTYPE,
            variable=UNCERTAINTY,
        )
    return write_strip(mosaic_url, strip_dir, layout, row, dtype=dtype)


def write_strip(
    mosaic_url: str, strip_dir: str, layout: TileLayout, row: int, *, dtype: str, variable: str = VARIABLE
) -> int:
    """Encode one tile row of the Zarr mosaic as compressed strip GeoTIFFs: full resolution and every COG
    overview level (block means of the valid pixels), so the stitch copies overviews instead of computing them
    over the whole mosaic. Atomic per file; skipped when the full-resolution strip is present.

    Returns:
        The strip's height in output pixels.
    """
    strips = OutputDir(strip_dir)  # a local folder or an object-store prefix
    y0, y1 = strip_bounds(layout, row)
    if strips.exists(strip_name(row)):
        return y1 - y0
    arr = zarr.open_array(mosaic_url, path=variable, mode="r", zarr_format=3)
    height, width = arr.shape[1:]
    levels = overview_levels(height, width, layout)
    profile = {
        "driver": "GTiff",
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
    # encoded in the strip folder's staging (inside it when local: published by a rename; else local scratch,
    # each file then uploaded whole)
    staging = Path(strips.local_staging())
    parts = [staging / strip_name(row, k) for k in range(levels + 1)]
    try:
        _encode_strip(arr, parts, profile, y0, y1, width, layout, dtype)
        for k in range(levels, -1, -1):  # the full-resolution strip last: it means "all levels done"
            strips.publish(parts[k], strip_name(row, k))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return y1 - y0


def _encode_strip(
    arr, parts: list[Path], profile: dict, y0: int, y1: int, width: int, layout: TileLayout, dtype: str
) -> None:
    """Write rows [y0, y1) of the mosaic array `arr` into `parts`: full resolution and each overview level."""
    # A small GDAL block cache: the writers' finished blocks go to disk as the cores are written, instead of
    # GDAL's default (5 % of RAM) holding a whole strip, whose width is the AOI's (issue 12: a strip task
    # grew by 59 -> 86 MiB from 5 to 20 tiles wide). It is not zero: the overview levels' windows (192 px at
    # level 1) split 128-px blocks, which a cache finishes before they are written (20 tiles wide, 3 strips:
    # with a 16-byte cache +74 MiB, 5.07 s, level-1 strip 11.3 MB; with 16 MB +84 MiB, 4.89 s, 9.6 MB).
    with gdal_env(cache_mb=STRIP_CACHE_MB):
        with warnings.catch_warnings():  # strips carry no georeferencing: the VRT that stitches them does
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            outs = [
                rasterio.open(part, "w", **profile, height=-(-(y1 - y0) // 2**k), width=-(-width // 2**k))
                for k, part in enumerate(parts)
            ]
        step = layout.core * SR_FACTOR  # one tile core at a time: memory per core, not per AOI width
        try:
            for x0 in range(0, width, step):
                block = decode(arr[:, y0:y1, x0 : min(width, x0 + step)])
                for k, dst in enumerate(outs):
                    if k:
                        block = halve(block)
                    ox = x0 // 2**k
                    dst.write(encode(block, dtype), window=((0, block.shape[1]), (ox, ox + block.shape[2])))
        finally:
            for dst in outs:
                dst.close()


def _vrt(
    strip_dir: str | Path,
    grid: SceneGrid,
    layout: TileLayout,
    *,
    dtype: str,
    level: int,
    overviews: int,
    tags: dict[str, str] | None = None,
) -> str:
    """VRT XML of the strips at one level, with the band metadata the COG carries and, for level 0, the
    overview levels as the bands' overviews."""
    height, width = grid.output_shape()
    f = 2**level
    h, w = -(-height // f), -(-width // f)
    gdal_type = "UInt16" if dtype == "uint16" else "Float32"
    gsd = TARGET_GSD_M * f
    transform = (grid.left, gsd, 0.0, grid.top, 0.0, -gsd)
    crs = rasterio.crs.CRS.from_user_input(grid.crs).to_wkt()
    nodata = "0" if dtype == "uint16" else "nan"
    scale = SCALE if dtype == "uint16" else 1.0
    bands = []
    for i, band in enumerate(S2_BANDS, start=1):
        sources = []
        for row in range(layout.rows):
            y0, y1 = strip_bounds(layout, row)
            sy0, sh = y0 // f, -(-(y1 - y0) // f)
            sources.append(  # strips are disjoint and cover the mosaic: simple sources, no nodata masking
                '<SimpleSource><SourceFilename relativeToVRT="0">'
                f"{escape(str(strip_path(strip_dir, row, level)))}"
                f"</SourceFilename><SourceBand>{i}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{sh}"/>'
                f'<DstRect xOff="0" yOff="{sy0}" xSize="{w}" ySize="{sh}"/></SimpleSource>'
            )
        ovr = "".join(
            f'<Overview><SourceFilename relativeToVRT="1">ovr{k}.vrt</SourceFilename>'
            f"<SourceBand>{i}</SourceBand>"
            "</Overview>"
            for k in range(1, overviews + 1)
        )
        bands.append(
            f'<VRTRasterBand dataType="{gdal_type}" band="{i}"><Description>{band}</Description>'
            f"<NoDataValue>{nodata}</NoDataValue><Offset>0</Offset><Scale>{scale}</Scale>"
            + "".join(sources)
            + ovr
            + "</VRTRasterBand>"
        )
    extra = "".join(f'<MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in (tags or {}).items())
    metadata = (
        f'<Metadata><MDI key="reflectance_scale">{SCALE if dtype == "uint16" else 1}</MDI>'
        f'<MDI key="software">difffusr</MDI>{extra}</Metadata>'
    )
    return (
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{escape(crs)}</SRS>'
        f"<GeoTransform>{', '.join(repr(v) for v in transform)}</GeoTransform>{metadata}"
        + "".join(bands)
        + "</VRTDataset>"
    )


def write_strips_vrt(
    strip_dir: str | Path,
    folder: str | Path,
    grid: SceneGrid,
    layout: TileLayout,
    *,
    dtype: str,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write `folder`/mosaic.vrt (and ovr<k>.vrt per overview level) over the strips; returns the main VRT."""
    height, width = grid.output_shape()
    levels = overview_levels(height, width, layout)
    folder = Path(folder)
    for k in range(1, levels + 1):
        (folder / f"ovr{k}.vrt").write_text(_vrt(strip_dir, grid, layout, dtype=dtype, level=k, overviews=0))
    main = folder / "mosaic.vrt"
    main.write_text(_vrt(strip_dir, grid, layout, dtype=dtype, level=0, overviews=levels, tags=tags))
    return main


def assemble_cog(
    strip_dir: str | Path,
    dest: str | Path,
    grid: SceneGrid,
    layout: TileLayout,
    *,
    dtype: str,
    uncertainty_dest: str | Path | None = None,
) -> None:
    """Stitch the strips and their overview levels into a COG at a local path (the overviews are copied as the
    strip tasks computed them, not recomputed over the whole mosaic); with `uncertainty_dest`, the
    uncertainty layer's strips into that COG too (one task for both)."""
    if uncertainty_dest is not None:
        _stitch(
            Path(strip_dir) / UNCERTAINTY_STRIPS,
            uncertainty_dest,
            grid,
            layout,
            dtype=UNCERTAINTY_DTYPE,
            tags=UNCERTAINTY_TAGS,
        )
    _stitch(strip_dir, dest, grid, layout, dtype=dtype)


def assemble_cog_to(
    strip_url: str,
    out_url: str,
    grid: SceneGrid,
    layout: TileLayout,
    *,
    dtype: str,
    uncertainty: bool = False,
) -> None:
    """`assemble_cog` of the strips at `strip_url` into mosaic.tif (and with `uncertainty` uncertainty.tif),
    published into `out_url`: local folders, or an object store (strips fetched to local scratch first, each
    COG uploaded whole). The COGs are built in `out_url`'s staging, inside it when local."""
    strips, out = OutputDir(strip_url), OutputDir(out_url)
    staging = Path(out.local_staging())
    try:
        local = Path(strips.root) if strips.is_local else _fetch(strips, staging / "strips")
        cog = staging / "mosaic.tif"
        unc_cog = staging / "uncertainty.tif" if uncertainty else None
        assemble_cog(local, cog, grid, layout, dtype=dtype, uncertainty_dest=unc_cog)
        if unc_cog is not None:
            out.publish(unc_cog, "uncertainty.tif")
        out.publish(cog, "mosaic.tif")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(remote: OutputDir, folder: Path) -> Path:
    """Copy every file under `remote` into `folder` (same relative paths); returns `folder`."""
    for name in remote.fs.find(remote.root):
        target = folder / os.path.relpath(name, remote.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        remote.fs.get_file(name, str(target))
    return folder


def _stitch(
    strip_dir: str | Path,
    dest: str | Path,
    grid: SceneGrid,
    layout: TileLayout,
    *,
    dtype: str,
    tags: dict[str, str] | None = None,
) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    dest = Path(dest)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".cog-") as tmp:
        vrt = write_strips_vrt(strip_dir, tmp, grid, layout, dtype=dtype, tags=tags)
        staged = Path(tmp) / "cog.tif"
        with gdal_env(cache_mb=STITCH_CACHE_MB, GDAL_MAX_DATASET_POOL_SIZE=STITCH_OPEN_STRIPS):
            _copy_as_cog(vrt, staged, dtype=dtype, overviews="FORCE_USE_EXISTING", num_threads="ALL_CPUS")
        os.replace(staged, dest)


def _copy_as_cog(src: Path, dest: Path, *, dtype: str, **options: str) -> None:
    """GDAL's COG driver with the product's layout: ZSTD + predictor, 512 px blocks (and `options`)."""
    rasterio.shutil.copy(
        src,
        dest,
        driver="COG",
        compress="ZSTD",
        predictor=2 if dtype == "uint16" else 3,
        blocksize=512,
        BIGTIFF="IF_SAFER",
        **options,
    )
