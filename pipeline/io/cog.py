"""Export the Zarr mosaic as a 12-band Cloud-Optimized GeoTIFF, atomically.

uint16 (default): DN = round(reflectance * 10000), clipped to 1..65535 so that 0 stays nodata; band scale
1e-4 and offset 0 are set, so GDAL/rasterio users get reflectance back with the usual unscale. float32:
reflectance with NaN nodata. Both ZSTD with predictor 2 (3 for float), 512-px tiles, overviews.
The file is built locally under a temporary name and then renamed (or uploaded) into place.

A job's COG is built from strips: Ray tasks encode each strip of the mosaic (two 512-px block rows) as the
COG's own compressed tiles while the rest of the job still runs (`write_strip`: full resolution and its
level-1 half), and one task lays those tiles out as a COG (`assemble_cog`, `tiff_file.write_cog`: no
re-encoding; the overviews below level 1, 1/12 of the pixels, computed from the level-1 halves), removing
each strip as its tiles are copied, so the COG's bytes are on disk once (GDAL's COG driver needs its whole
source while it writes a second copy). The strips live next to the outputs, on local disk or in the object
store (`--out s3://...`: each strip is uploaded whole, and the stitch task fetches them, stitches and
uploads the COG itself, `assemble_cog_to`), so the export never runs in the driver. `write_geotiff` writes
a COG from any row reader in one process (`difffusr superres`).

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

import numpy as np
import rasterio
import rasterio.shutil
import zarr
from rasterio.transform import Affine

from pipeline.bands import S2_BANDS, TARGET_GSD_M
from pipeline.config import DTYPES
from pipeline.errors import ConfigError, DataError
from pipeline.io.grid import SceneGrid
from pipeline.io.mosaic_store import UNCERTAINTY, VARIABLE
from pipeline.io.outputs import OutputDir
from pipeline.io.reflectance import SCALE, decode, encode
from pipeline.io.tiff_file import (
    IMAGE_LENGTH,
    IMAGE_WIDTH,
    LONG,
    NEW_SUBFILE_TYPE,
    TILE_BYTE_COUNTS,
    TILE_LENGTH,
    TILE_OFFSETS,
    TILE_WIDTH,
    CogLevel,
    Tag,
    TileSource,
    read_ifds,
    write_cog,
)
from pipeline.tiling.grid import SR_FACTOR, TileLayout

#: File type of the uncertainty layer (see the module docstring).
UNCERTAINTY_DTYPE = "float32"
#: GeoTIFF tags of the uncertainty layer.
UNCERTAINTY_TAGS = {
    "quantity": "per-pixel spread (std) of the reflectance over the sampler's draws; not an error bar",
}
#: Strip folder of the uncertainty layer inside the product's strip folder.
UNCERTAINTY_STRIPS = "uncertainty"
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


#: COG block size, pixels (both axes, every level).
BLOCK = 512
#: Output rows of one strip: two full-resolution COG block rows, so that its level-1 half is one level-1
#: block row and both are the COG's own tiles.
STRIP_ROWS = 2 * BLOCK
#: ZSTD level of the COG's tiles (GDAL's COG default). The strip tasks encode the final tiles, in parallel.
ZSTD_LEVEL = 9


def strip_count(height: int) -> int:
    """Strips of a mosaic `height` output pixels tall."""
    return -(-height // STRIP_ROWS)


def strip_bounds(height: int, strip: int) -> tuple[int, int]:
    """Output-pixel rows [y0, y1) of strip `strip`."""
    return strip * STRIP_ROWS, min(height, (strip + 1) * STRIP_ROWS)


def strip_tile_rows(layout: TileLayout) -> list[range]:
    """The tile rows whose cores each strip covers: a strip can be encoded once they are all written."""
    core_out, height = layout.core * SR_FACTOR, layout.height * SR_FACTOR
    out = []
    for g in range(strip_count(height)):
        y0, y1 = strip_bounds(height, g)
        out.append(range(y0 // core_out, (y1 - 1) // core_out + 1))
    return out


def strip_name(strip: int, level: int = 0) -> str:
    """File name of strip `strip` at overview level `level` (0 = full resolution, 1 = half)."""
    return f"strip_{strip:05d}.tif" if level == 0 else f"strip_{strip:05d}_ovr{level}.tif"


def strip_path(strip_dir: str | Path, strip: int, level: int = 0) -> Path:
    """Strip GeoTIFF `strip` at overview level `level` in a local strip folder."""
    return Path(strip_dir) / strip_name(strip, level)


def overview_levels(height: int, width: int) -> int:
    """Overview levels of the COG: halve until the longest side fits one block (GDAL's AUTO rule)."""
    levels = 0
    while max(-(-height // 2**levels), -(-width // 2**levels)) > BLOCK:
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


def tile_profile(dtype: str) -> dict:
    """GTiff creation options of every file whose tiles end up in the COG (the COG's own encoding)."""
    return {
        "driver": "GTiff",
        "count": len(S2_BANDS),
        "dtype": dtype,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "ZSTD",
        "zstd_level": ZSTD_LEVEL,
        "predictor": 2 if dtype == "uint16" else 3,
        "nodata": 0 if dtype == "uint16" else float("nan"),
        "BIGTIFF": "IF_SAFER",
    }


def write_strips(
    mosaic_url: str, strip_dir: str, layout: TileLayout, strip: int, *, dtype: str, uncertainty: bool = False
) -> int:
    """`write_strip` of the product, and with `uncertainty` of the uncertainty layer (float32) into
    `strip_dir`/uncertainty: one task per strip for both."""
    if uncertainty:
        write_strip(
            mosaic_url,
            f"{strip_dir.rstrip('/')}/{UNCERTAINTY_STRIPS}",  # a URL: no Path, which folds s3:// to s3:/
            layout,
            strip,
            dtype=UNCERTAINTY_DTYPE,
            variable=UNCERTAINTY,
        )
    return write_strip(mosaic_url, strip_dir, layout, strip, dtype=dtype)


def write_strip(
    mosaic_url: str, strip_dir: str, layout: TileLayout, strip: int, *, dtype: str, variable: str = VARIABLE
) -> int:
    """Encode one strip of the Zarr mosaic (`STRIP_ROWS` output rows) as the COG's own tiles: a full-
    resolution GeoTIFF and, when the COG has overviews, its level-1 half (block means of the valid pixels),
    both with the COG's blocks and encoding, so that the stitch copies their tiles' bytes. Atomic per file;
    skipped when the full-resolution strip is present.

    Returns:
        The strip's height in output pixels.
    """
    strips = OutputDir(strip_dir)  # a local folder or an object-store prefix
    arr = zarr.open_array(mosaic_url, path=variable, mode="r", zarr_format=3)
    height, width = arr.shape[1:]
    y0, y1 = strip_bounds(height, strip)
    if strips.exists(strip_name(strip)):
        return y1 - y0
    levels = min(1, overview_levels(height, width))
    # encoded in the strip folder's staging (inside it when local: published by a rename; else local scratch,
    # each file then uploaded whole)
    staging = Path(strips.local_staging())
    parts = [staging / strip_name(strip, k) for k in range(levels + 1)]
    try:
        _encode_strip(arr, parts, tile_profile(dtype), y0, y1, width, dtype)
        for k in range(levels, -1, -1):  # the full-resolution strip last: it means "all levels done"
            strips.publish(parts[k], strip_name(strip, k))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return y1 - y0


def _encode_strip(arr, parts: list[Path], profile: dict, y0: int, y1: int, width: int, dtype: str) -> None:
    """Write rows [y0, y1) of the mosaic array `arr` into `parts`: full resolution (and level 1)."""
    # Windows one block wide: each full-resolution write is whole blocks (encoded at once), memory per block
    # column, not per AOI width. A level-1 block gets two half-width writes: the block cache holds one block.
    with gdal_env(cache_mb=STRIP_CACHE_MB):
        with warnings.catch_warnings():  # strips carry no georeferencing: the COG's own IFD does
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            outs = [
                rasterio.open(part, "w", **profile, height=-(-(y1 - y0) // 2**k), width=-(-width // 2**k))
                for k, part in enumerate(parts)
            ]
        try:
            for x0 in range(0, width, BLOCK):
                block = decode(arr[:, y0:y1, x0 : min(width, x0 + BLOCK)])
                for k, dst in enumerate(outs):
                    if k:
                        block = halve(block)
                    ox = x0 // 2**k
                    dst.write(encode(block, dtype), window=((0, block.shape[1]), (ox, ox + block.shape[2])))
        finally:
            for dst in outs:
                dst.close()


def assemble_cog(
    strip_dir: str | Path,
    dest: str | Path,
    grid: SceneGrid,
    layout: TileLayout,
    *,
    dtype: str,
    uncertainty_dest: str | Path | None = None,
    mosaic_url: str | None = None,
) -> None:
    """Lay the strips' tiles out as a COG at a local path, with the overviews below level 1 computed from the
    strips' level-1 halves; with `uncertainty_dest`, the uncertainty layer's strips into that COG too (one
    task for both). The strips are removed as their tiles are copied: the COG's bytes are on disk once.
    With `mosaic_url`, a missing strip (a retried stitch removed it) is encoded again from the mosaic."""
    if uncertainty_dest is not None:
        _stitch(
            Path(strip_dir) / UNCERTAINTY_STRIPS,
            uncertainty_dest,
            grid,
            layout,
            dtype=UNCERTAINTY_DTYPE,
            tags=UNCERTAINTY_TAGS,
            mosaic_url=mosaic_url,
            variable=UNCERTAINTY,
        )
    _stitch(strip_dir, dest, grid, layout, dtype=dtype, mosaic_url=mosaic_url)


def assemble_cog_to(
    strip_url: str,
    out_url: str,
    grid: SceneGrid,
    layout: TileLayout,
    *,
    dtype: str,
    uncertainty: bool = False,
    mosaic_url: str | None = None,
) -> None:
    """`assemble_cog` of the strips at `strip_url` into mosaic.tif (and with `uncertainty` uncertainty.tif),
    published into `out_url`: local folders, or an object store (strips fetched to local scratch first, each
    COG uploaded whole). The COGs are built in `out_url`'s staging, inside it when local."""
    strips, out = OutputDir(strip_url), OutputDir(out_url)
    staging = Path(out.local_staging())
    try:
        if strips.is_local:
            local = Path(strips.root)
        else:
            local = _fetch(strips, staging / "strips")  # copies: the stitch removes them, not the originals
        cog = staging / "mosaic.tif"
        unc_cog = staging / "uncertainty.tif" if uncertainty else None
        assemble_cog(local, cog, grid, layout, dtype=dtype, uncertainty_dest=unc_cog, mosaic_url=mosaic_url)
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
    mosaic_url: str | None = None,
    variable: str = VARIABLE,
) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    dest, strip_dir = Path(dest), Path(strip_dir)
    height, width = grid.output_shape()
    levels, strips = overview_levels(height, width), strip_count(height)
    for s in range(strips):
        if not strip_path(strip_dir, s).exists():
            if mosaic_url is None:
                raise DataError(f"COG strip {strip_path(strip_dir, s)} is missing")
            write_strip(mosaic_url, str(strip_dir), layout, s, dtype=dtype, variable=variable)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".cog-") as tmp:
        main = _template_tags(Path(tmp) / "template.tif", grid, dtype, tags)
        sources = [
            [_tiles(strip_path(strip_dir, s, k)) for s in range(strips)] for k in range(min(1, levels) + 1)
        ]
        for k in range(2, levels + 1):  # small: 1/16 + 1/64 + ... of the full resolution
            below = [p.path for p in sources[k - 1]]
            sources.append(
                [_tiles(_overview_below(below, Path(tmp) / f"ovr{k}.tif", height, width, k, dtype))]
            )
        cog_levels = []
        for k, level_sources in enumerate(sources):
            h, w = -(-height // 2**k), -(-width // 2**k)
            level_tags = dict(main) if k == 0 else {c: t for c, t in main.items() if c in OVERVIEW_TAGS}
            level_tags.update({IMAGE_WIDTH: Tag.of(LONG, [w]), IMAGE_LENGTH: Tag.of(LONG, [h])})
            if k:
                level_tags[NEW_SUBFILE_TYPE] = Tag.of(LONG, [1])
            cog_levels.append(CogLevel(level_tags, level_sources, tiles=-(-h // BLOCK) * -(-w // BLOCK)))
        staged = Path(tmp) / "cog.tif"
        write_cog(staged, cog_levels)
        os.replace(staged, dest)


#: Tags of an overview's IFD (GDAL's COG writes these; the georeferencing and metadata are the main IFD's).
OVERVIEW_TAGS = frozenset({258, 259, 262, 277, 284, 317, 322, 323, 338, 339, 42113})


def _tiles(path: Path) -> TileSource:
    """The tiles of a GTiff written with `tile_profile`, in row-major order."""
    (ifd,) = read_ifds(path)[:1]
    if ifd.value(TILE_WIDTH) != BLOCK or ifd.value(TILE_LENGTH) != BLOCK:
        raise DataError(f"{path}: tiles are not {BLOCK} px: not a COG strip")
    return TileSource(path, ifd.tile_ranges())


def _template_tags(path: Path, grid: SceneGrid, dtype: str, tags: dict[str, str] | None) -> dict[int, Tag]:
    """The full-resolution IFD's tags as GDAL writes them (georeferencing, nodata, band names, scales,
    metadata), from an empty sparse GTiff of the COG's size; without the tile offsets and counts."""
    height, width = grid.output_shape()
    gsd = TARGET_GSD_M
    profile = {
        **tile_profile(dtype),
        "height": height,
        "width": width,
        "crs": grid.crs,
        "transform": Affine(gsd, 0.0, grid.left, 0.0, -gsd, grid.top),
        "SPARSE_OK": "TRUE",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for i, band in enumerate(S2_BANDS, start=1):
            dst.set_band_description(i, band)
        if dtype == "uint16":
            dst.scales = [SCALE] * len(S2_BANDS)
            dst.offsets = [0.0] * len(S2_BANDS)
        dst.update_tags(
            reflectance_scale=str(SCALE) if dtype == "uint16" else "1", software="difffusr", **(tags or {})
        )
    main = read_ifds(path)[0].tags
    return {c: t for c, t in main.items() if c not in (TILE_OFFSETS, TILE_BYTE_COUNTS)}


def _overview_below(sources: list[Path], dest: Path, height: int, width: int, level: int, dtype: str) -> Path:
    """Overview level `level` as a GTiff at `dest`, block by block: the block means of level `level` - 1,
    whose files `sources` stack their rows top to bottom (the strips' level-1 halves, or one file)."""
    h, w = -(-height // 2**level), -(-width // 2**level)
    below_h = -(-height // 2 ** (level - 1))
    with warnings.catch_warnings():  # strips and levels carry no georeferencing: the COG's main IFD does
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        readers = [rasterio.open(p) for p in sources]
    tops = np.cumsum([0] + [r.height for r in readers])
    if tops[-1] != below_h:
        raise DataError(f"overview level {level - 1} is {tops[-1]} rows, not {below_h}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            dst = rasterio.open(dest, "w", **tile_profile(dtype), height=h, width=w)
        with gdal_env(cache_mb=STRIP_CACHE_MB), dst:
            for y in range(0, h, BLOCK):
                b0, b1 = 2 * y, min(below_h, 2 * (y + BLOCK))
                for x in range(0, w, BLOCK):
                    c0, c1 = 2 * x, min(readers[0].width, 2 * (x + BLOCK))
                    parts = []
                    for r, top in zip(readers, tops):
                        lo, hi = max(b0, top), min(b1, top + r.height)
                        if lo < hi:
                            parts.append(r.read(window=((lo - top, hi - top), (c0, c1))))
                    block = halve(decode(np.concatenate(parts, axis=1)))
                    dst.write(encode(block, dtype), window=((y, y + block.shape[1]), (x, x + block.shape[2])))
    finally:
        for r in readers:
            r.close()
    return dest


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
