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

import itertools
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
            **tile_profile(dtype),
            "height": height,
            "width": width,
            "crs": crs,
            "transform": transform,
        }
        with rasterio.open(plain, "w", **profile) as dst:
            for y0 in range(0, height, row_block):
                y1 = min(height, y0 + row_block)
                dst.write(encode(read_rows(y0, y1), dtype), window=((y0, y1), (0, width)))
            _describe(dst, dtype, tags)
        staged = Path(tmp) / "cog.tif"
        _copy_as_cog(plain, staged, dtype=dtype, overviews="AUTO", resampling="average")
        os.replace(staged, path)


#: COG block size, pixels (both axes, every level).
BLOCK = 512
#: Output rows of one strip: two full-resolution COG block rows, so that its level-1 half is one level-1
#: block row and both are the COG's own tiles.
STRIP_ROWS = 2 * BLOCK
#: ZSTD level of the COG's tiles. Two strips of the 420-tile mosaic (2 x 1,024 x 7,632 px, one process):
#: level 1 7.8 CPU s / 212 MB, 3 8.9 s / 200 MB, 6 13.6 s / 194 MB, 9 (GDAL's COG default) 20.4 s / 192 MB:
#: level 3 keeps the COG within 4 % of level 9's size at less than half the CPU.
ZSTD_LEVEL = 3


def _describe(dst, dtype: str, tags: dict[str, str] | None) -> None:
    """The product's band names, scale/offset (uint16) and metadata tags on an open GDAL writer `dst`."""
    for i, band in enumerate(S2_BANDS, start=1):
        dst.set_band_description(i, band)
    if dtype == "uint16":
        dst.scales = [SCALE] * len(S2_BANDS)
        dst.offsets = [0.0] * len(S2_BANDS)
    dst.update_tags(
        reflectance_scale=str(SCALE) if dtype == "uint16" else "1", software="difffusr", **(tags or {})
    )


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


def halve_dn(dn: np.ndarray) -> np.ndarray:
    """`halve` on uint16 digital numbers (0 = nodata) in integers: the mean of each 2 x 2 block's valid DNs,
    rounded half up (the float path rounds ties to even, so the two differ by at most 1 DN), 0 where none.
    A quarter of the float path's memory and no decode/encode round trip."""
    c, h, w = dn.shape
    padded = np.zeros((c, h + h % 2, w + w % 2), np.uint16)
    padded[:, :h, :w] = dn
    total = np.zeros((c, padded.shape[1] // 2, padded.shape[2] // 2), np.uint32)
    count = np.zeros(total.shape, np.uint32)
    for quarter in (padded[:, i::2, j::2] for i in (0, 1) for j in (0, 1)):  # strided adds: 5x a 5-D sum
        total += quarter
        count += quarter > 0
    return ((2 * total + count) // np.maximum(2 * count, 1)).astype(np.uint16)  # 0 where none is valid


def _halve_stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values (either dtype) -> `halve`d values stored as `dtype`."""
    if values.dtype == np.uint16 and dtype == "uint16":
        return halve_dn(values)
    return encode(halve(decode(values)), dtype)


def _as_stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values (either dtype) -> values stored as `dtype` (no round trip when they already are)."""
    return values if values.dtype == np.dtype(dtype) else encode(decode(values), dtype)


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
    # One full-resolution block at a time: memory per block, not per AOI width (a task's memory is what
    # `halve` makes of one window). Each level-1 block gets its four quarters from consecutive windows; the
    # block cache holds it until it is whole, so it is encoded once.
    with gdal_env(cache_mb=STRIP_CACHE_MB):
        with warnings.catch_warnings():  # strips carry no georeferencing: the COG's own IFD does
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            outs = [
                rasterio.open(part, "w", **profile, height=-(-(y1 - y0) // 2**k), width=-(-width // 2**k))
                for k, part in enumerate(parts)
            ]
        try:
            for xp in range(0, width, 2 * BLOCK):  # a level-1 block's column
                for yb in range(y0, y1, BLOCK):
                    for xb in range(xp, min(width, xp + 2 * BLOCK), BLOCK):
                        raw = arr[:, yb : min(y1, yb + BLOCK), xb : min(width, xb + BLOCK)]
                        for k, dst in enumerate(outs):
                            block = _halve_stored(raw, dtype) if k else _as_stored(raw, dtype)
                            oy, ox = (yb - y0) // 2**k, xb // 2**k
                            window = ((oy, oy + block.shape[1]), (ox, ox + block.shape[2]))
                            dst.write(block, window=window)
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
    published into `out_url`: local folders, or an object store (strips moved to local scratch first, each
    COG uploaded whole). The COGs are built in `out_url`'s staging, inside it when local."""
    strips, out = OutputDir(strip_url), OutputDir(out_url)
    staging = Path(out.local_staging())
    try:
        if strips.is_local:
            local = Path(strips.root)
        else:
            # moved, not copied: the object store then never holds the strips and the COG at once (a strip a
            # retried stitch no longer finds is encoded again from the mosaic, as is a rerun's strip task)
            local = _move_here(strips, staging / "strips")
        cog = staging / "mosaic.tif"
        unc_cog = staging / "uncertainty.tif" if uncertainty else None
        assemble_cog(local, cog, grid, layout, dtype=dtype, uncertainty_dest=unc_cog, mosaic_url=mosaic_url)
        if unc_cog is not None:
            out.publish(unc_cog, "uncertainty.tif")
        out.publish(cog, "mosaic.tif")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_here(remote: OutputDir, folder: Path) -> Path:
    """Move every file under `remote` into `folder` (same relative paths); returns `folder`."""
    for name in remote.fs.find(remote.root):
        target = folder / os.path.relpath(name, remote.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        remote.fs.get_file(name, str(target))
        remote.fs.rm_file(name)
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
    halves = min(1, levels)
    for s in range(strips):
        # The stitch removes the level-1 halves before the full-resolution strips (smallest level first), so
        # a retried stitch can find a strip whose half is gone: encode the whole strip again.
        parts = [strip_path(strip_dir, s, k) for k in range(halves + 1)]
        if not all(p.exists() for p in parts):
            if mosaic_url is None:
                missing = next(p for p in parts if not p.exists())
                raise DataError(f"COG strip {missing} is missing")
            for p in parts:  # write_strip skips a strip whose full-resolution file is present
                p.unlink(missing_ok=True)
            write_strip(mosaic_url, str(strip_dir), layout, s, dtype=dtype, variable=variable)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".cog-") as tmp:
        main = _template_tags(Path(tmp) / "template.tif", grid, dtype, tags)
        sources = [[_tiles(strip_path(strip_dir, s, k)) for s in range(strips)] for k in range(halves + 1)]
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
        _describe(dst, dtype, tags)
    main = read_ifds(path)[0].tags
    return {c: t for c, t in main.items() if c not in (TILE_OFFSETS, TILE_BYTE_COUNTS)}


def _overview_below(sources: list[Path], dest: Path, height: int, width: int, level: int, dtype: str) -> Path:
    """Overview level `level` as a GTiff at `dest`, block by block: the block means of level `level` - 1,
    whose files `sources` stack their rows top to bottom (the strips' level-1 halves, or one file)."""
    h, w = -(-height // 2**level), -(-width // 2**level)
    below_h, below_w = -(-height // 2 ** (level - 1)), -(-width // 2 ** (level - 1))
    heights = []
    with warnings.catch_warnings():  # strips and levels carry no georeferencing: the COG's main IFD does
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        for p in sources:
            with rasterio.open(p) as src:
                heights.append(src.height)
        dst = rasterio.open(dest, "w", **tile_profile(dtype), height=h, width=w)
    tops = np.cumsum([0, *heights])
    if tops[-1] != below_h:
        raise DataError(f"overview level {level - 1} is {tops[-1]} rows, not {below_h}")
    # Only the files under the current block row are open: an open GTiff keeps a decoded block (~6 MB for
    # 12 bands) and its compressed bytes: opening every strip at once grew the stitch with the AOI height.
    readers: dict[int, rasterio.DatasetReader] = {}
    try:
        with gdal_env(cache_mb=STRIP_CACHE_MB), dst, warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            for y in range(0, h, BLOCK):
                b0, b1 = 2 * y, min(below_h, 2 * (y + BLOCK))
                under = [i for i in range(len(sources)) if tops[i] < b1 and tops[i + 1] > b0]
                for i in [i for i in readers if i not in under]:
                    readers.pop(i).close()
                for i in under:
                    readers.setdefault(i, rasterio.open(sources[i]))
                for x in range(0, w, BLOCK):
                    # by quarters, so a window is one block of the level below (the cache completes the block)
                    for qy, qx in itertools.product(
                        range(y, min(h, y + BLOCK), BLOCK // 2), range(x, min(w, x + BLOCK), BLOCK // 2)
                    ):
                        r0, r1 = 2 * qy, min(below_h, 2 * qy + BLOCK)
                        c0, c1 = 2 * qx, min(below_w, 2 * qx + BLOCK)
                        parts = [
                            readers[i].read(
                                window=(
                                    (max(r0, tops[i]) - tops[i], min(r1, tops[i + 1]) - tops[i]),
                                    (c0, c1),
                                )
                            )
                            for i in under
                            if tops[i] < r1 and tops[i + 1] > r0
                        ]
                        block = _halve_stored(np.concatenate(parts, axis=1), dtype)
                        window = ((qy, qy + block.shape[1]), (qx, qx + block.shape[2]))
                        dst.write(block, window=window)
    finally:
        for r in readers.values():
            r.close()
    return dest


def _copy_as_cog(src: Path, dest: Path, *, dtype: str, **options: str) -> None:
    """GDAL's COG driver with the product's layout: ZSTD + predictor, 512 px blocks (and `options`), the
    same encoding as a job's strips."""
    rasterio.shutil.copy(
        src,
        dest,
        driver="COG",
        compress="ZSTD",
        level=ZSTD_LEVEL,
        predictor=tile_profile(dtype)["predictor"],
        blocksize=BLOCK,
        BIGTIFF="IF_SAFER",
        **options,
    )
