"""Read a scene folder of single-band Sentinel-2 GeoTIFFs: the one reader of scene folders.

Inference (`superres`, `eval`), fusion training and SR training all read scene folders here. A scene folder
holds one GeoTIFF per band, named by band id: `B01.tif` ... `B12.tif`, `B8A.tif` (also accepted:
`<anything>_B01.tif` as BigEarthNet names them, and `.tiff`). Pixel values become float32 surface
reflectance through the one rule of `pipeline.catalog.radiometry`, resolved from each file's own tags:
declared scale/offset, else DN / 10000 (minus 0.1 for a processing baseline >= 04.00 read from a
`_N0400_`-style folder name); float files without tags are reflectance. The file's nodata value (DN 0 when
an integer file declares none) becomes NaN. The 10/20/60 m grids are intersected and snapped to the 60 m
pixel grid, so the three groups nest exactly 1:2:6.

Every rasterio/GDAL failure to open or read a band file (empty, truncated, not a raster) is an AssetError
naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from pipeline.bands import BAND_GROUPS
from pipeline.catalog.radiometry import (
    Radiometry,
    processing_baseline,
    resolve_file_radiometry,
    to_reflectance,
)
from pipeline.errors import AssetError, DataError


@dataclass(frozen=True, kw_only=True)
class Scene:
    """One scene's bands at their native grids, reflectance, NaN = nodata.

    Attributes:
        name: folder name.
        b10: (4, H, W) float32 B02 B03 B04 B08.
        b20: (6, H/2, W/2) float32 B05 B06 B07 B8A B11 B12.
        b60: (2, H/6, W/6) float32 B01 B09.
        crs: CRS of the bands (WKT or EPSG string).
        transform: affine transform of the 10 m group grid (GDAL order a, b, c, d, e, f).
    """

    name: str
    b10: np.ndarray
    b20: np.ndarray
    b60: np.ndarray
    crs: str
    transform: tuple[float, ...]

    @property
    def groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.b10, self.b20, self.b60


def _band_file_candidates(folder: Path, band: str) -> list[Path]:
    """Files of `folder` named for `band`, by the first naming pattern that matches any."""
    for pattern in (f"{band}.tif", f"{band}.tiff", f"*_{band}.tif", f"*_{band}.tiff"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits
    return []


def has_band_files(folder: Path, bands: Sequence[str]) -> bool:
    """Whether `folder` holds a file named for every band of `bands` (readable or not)."""
    return all(_band_file_candidates(folder, b) for b in bands)


def find_band_file(folder: Path, band: str) -> Path:
    """Path of `band`'s GeoTIFF in `folder`; raises AssetError naming what was looked for."""
    hits = _band_file_candidates(folder, band)
    if len(hits) > 1:
        raise AssetError(
            f"scene folder {str(folder)!r} has several files for {band}: {[h.name for h in hits]}"
        )
    if not hits:
        raise AssetError(
            f"scene folder {str(folder)!r} has no GeoTIFF for band {band} "
            f"(looked for {band}.tif or *_{band}.tif); "
            "a scene folder needs all 12 L2A bands B01-B12 and B8A at their native resolution"
        )
    return hits[0]


def _unreadable(path: Path, exc: Exception) -> AssetError:
    """The AssetError for a band file rasterio/GDAL cannot open or read: which file, why, what to do."""
    if path.is_file() and path.stat().st_size == 0:
        why = "is empty (0 bytes)"
    elif "not recognized as" in str(exc) or "not a supported file format" in str(exc):
        why = "is not a GeoTIFF (GDAL does not recognise its format)"
    else:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        why = f"is truncated or corrupt (GDAL: {detail})"
    return AssetError(
        f"band file {str(path)!r} {why}; replace it with a complete single-band GeoTIFF of that band"
    )


def _open(path: Path) -> rasterio.DatasetReader:
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioError as exc:
        raise _unreadable(path, exc) from exc


def _read_band(
    src: rasterio.DatasetReader, radiometry: Radiometry, window: Window | None = None
) -> np.ndarray:
    """Band 1 of `src` (within `window`) as float32 reflectance, NaN = nodata."""
    try:
        raw = src.read(1, window=window)
    except rasterio.errors.RasterioError as exc:
        raise _unreadable(Path(src.name), exc) from exc
    return to_reflectance(raw, radiometry)


def file_radiometry(
    src: rasterio.DatasetReader, band_index: int = 1, baseline: float | None = None
) -> Radiometry:
    """The `Radiometry` of one band of an open GeoTIFF, from its own scale/offset/nodata tags."""
    i = band_index - 1
    return resolve_file_radiometry(
        integer=np.issubdtype(np.dtype(src.dtypes[i]), np.integer),
        scale=float(src.scales[i]) if src.scales else 1.0,
        offset=float(src.offsets[i]) if src.offsets else 0.0,
        nodata=src.nodata,
        baseline=baseline,
    )


def _folder_baseline(folder: Path) -> float | None:
    """Processing baseline from a product-style folder name (`..._N0400_...`), else None."""
    return processing_baseline({"id": folder.resolve().name})


def _open_bands(folder: Path, bands: Sequence[str]) -> dict[str, rasterio.DatasetReader]:
    if not folder.is_dir():
        raise AssetError(f"scene folder {str(folder)!r} does not exist or is not a folder")
    files = {band: find_band_file(folder, band) for band in bands}  # all names checked before any open
    srcs: dict[str, rasterio.DatasetReader] = {}
    try:
        for band, path in files.items():
            srcs[band] = _open(path)
    except AssetError:
        for src in srcs.values():
            src.close()
        raise
    return srcs


def read_scene(folder: str | Path) -> Scene:
    """Read the 12 band GeoTIFFs of a scene folder, cut to their common footprint on the 60 m grid.

    Raises:
        AssetError: a band file is missing, or cannot be opened or read (empty, truncated, not a raster).
        DataError: the bands do not share a CRS, their pixel sizes are not 1:2:6, or they do not overlap.
    """
    folder = Path(folder)
    srcs = _open_bands(folder, [band for group in BAND_GROUPS for band in group.bands])
    try:
        return _read_aligned(folder, srcs)
    finally:
        for src in srcs.values():
            src.close()


def read_bands(folder: str | Path, bands: Sequence[str]) -> np.ndarray:
    """Read some bands of one grid (e.g. the 10 m B04 B03 B02) of a scene folder, whole.

    Returns:
        (len(bands), H, W) float32 reflectance, NaN = nodata.

    Raises:
        AssetError: a band file is missing, or cannot be opened or read.
        DataError: the bands do not share one grid (CRS, transform and size).
    """
    folder = Path(folder)
    srcs = _open_bands(folder, bands)
    try:
        grids = {(str(s.crs), tuple(s.transform)[:6], s.shape) for s in srcs.values()}
        if len(grids) != 1:
            raise DataError(
                f"bands {list(bands)} of {str(folder)!r} are not on one grid; give bands of one resolution"
            )
        baseline = _folder_baseline(folder)
        return np.stack([_read_band(s, file_radiometry(s, baseline=baseline)) for s in srcs.values()])
    finally:
        for src in srcs.values():
            src.close()


def _read_aligned(folder: Path, srcs: dict) -> Scene:
    crs = {str(s.crs) for s in srcs.values()}
    if len(crs) != 1:
        raise DataError(
            f"bands of {str(folder)!r} are in different CRSs {sorted(crs)}; reproject them to one"
        )
    res10 = abs(srcs["B02"].transform.a)
    for group in BAND_GROUPS:
        for band in group.bands:
            t = srcs[band].transform
            want = res10 * group.factor_to_10m
            if not (
                math.isclose(abs(t.a), want, rel_tol=1e-6) and math.isclose(abs(t.e), want, rel_tol=1e-6)
            ):
                raise DataError(
                    f"{band} of {str(folder)!r} has {abs(t.a):g} m pixels, expected {want:g} m "
                    f"({group.factor_to_10m}x the {res10:g} m of B02): "
                    "the evaluation needs every band at its "
                    "native resolution (1:2:6)"
                )
            if t.b != 0 or t.d != 0 or t.e > 0:
                raise DataError(
                    f"{band} of {str(folder)!r} is rotated or south-up; only north-up grids are supported"
                )
    left = max(s.bounds.left for s in srcs.values())
    right = min(s.bounds.right for s in srcs.values())
    top = min(s.bounds.top for s in srcs.values())
    bottom = max(s.bounds.bottom for s in srcs.values())
    res60 = res10 * 6
    t60 = srcs["B01"].transform
    # snap the common footprint inwards onto the 60 m pixel edges
    left = t60.c + math.ceil((left - t60.c) / res60 - 1e-6) * res60
    top = t60.f - math.ceil((t60.f - top) / res60 - 1e-6) * res60
    n60x = math.floor((right - left) / res60 + 1e-6)
    n60y = math.floor((top - bottom) / res60 + 1e-6)
    if n60x < 1 or n60y < 1:
        raise DataError(f"the bands of {str(folder)!r} do not overlap by one 60 m pixel")
    baseline = _folder_baseline(folder)
    arrays = []
    for group in BAND_GROUPS:
        k = group.factor_to_10m
        stack = []
        for band in group.bands:
            src = srcs[band]
            col = (left - src.transform.c) / (res10 * k)
            row = (src.transform.f - top) / (res10 * k)
            if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
                raise DataError(
                    f"{band} of {str(folder)!r} is not on the 60 m pixel grid of B01 (offset {col:.3f} px)"
                )
            size = (n60y * 6 // k, n60x * 6 // k)
            win = Window(round(col), round(row), size[1], size[0])
            stack.append(_read_band(src, file_radiometry(src, baseline=baseline), win))
        arrays.append(np.stack(stack))
    transform = (res10, 0.0, left, 0.0, -res10, top)
    return Scene(
        name=folder.name,
        b10=arrays[0],
        b20=arrays[1],
        b60=arrays[2],
        crs=next(iter(crs)),
        transform=transform,
    )


@dataclass(frozen=True, kw_only=True)
class Product:
    """A 12-band super-resolved GeoTIFF read into memory.

    Attributes:
        path: file path.
        data: (12, H, W) float32 reflectance in S2_BANDS order, NaN = nodata.
        crs: CRS string.
        transform: GDAL-order affine transform.
    """

    path: str
    data: np.ndarray
    crs: str
    transform: tuple[float, ...]


def read_product(path: str | Path) -> Product:
    """Read a 12-band SR GeoTIFF; bands are matched by description (B01 ... B12) or else taken in S2 order."""
    from pipeline.bands import S2_BANDS

    path = Path(path)
    if not path.is_file():
        raise AssetError(f"SR product {str(path)!r} does not exist")
    try:
        with rasterio.open(path) as src:
            if src.count != len(S2_BANDS):
                raise DataError(
                    f"SR product {str(path)!r} has {src.count} bands; expected the 12 L2A bands {S2_BANDS}"
                )
            desc = list(src.descriptions)
            order = (
                [desc.index(b) for b in S2_BANDS]
                if set(S2_BANDS) <= set(desc)
                else list(range(len(S2_BANDS)))
            )
            raw = src.read()
            arrays = [to_reflectance(raw[i], file_radiometry(src, i + 1)) for i in order]
            t = src.transform
            return Product(
                path=str(path),
                data=np.stack(arrays),
                crs=str(src.crs),
                transform=(t.a, t.b, t.c, t.d, t.e, t.f),
            )
    except rasterio.errors.RasterioError as exc:
        raise AssetError(f"cannot read SR product {str(path)!r}: {exc}") from exc


def match_product_to_scene(product: Product, scene: Scene, sr_factor: int = 4) -> tuple[np.ndarray, Scene]:
    """Cut a product and its input scene to their common footprint on the scene's 60 m grid.

    Returns:
        (product pixels (12, 4H, 4W), scene cut to (4, H, W) / (6, H/2, W/2) / (2, H/6, W/6)).

    Raises:
        DataError: other CRS, pixel size not 1/sr_factor of the 10 m input, no overlap, or grids not aligned.
    """
    res10, _, left0, _, _, top0 = scene.transform
    pa, _, pleft, _, pe, ptop = product.transform
    if product.crs != scene.crs:
        raise DataError(
            f"SR product {product.path!r} has CRS {product.crs}, its inputs {scene.name!r} have CRS "
            f"{scene.crs}; give the scene folder the product was made from"
        )
    if not math.isclose(pa, res10 / sr_factor, rel_tol=1e-6) or not math.isclose(
        -pe, res10 / sr_factor, rel_tol=1e-6
    ):
        raise DataError(
            f"SR product {product.path!r} has {pa:g} m pixels; expected {res10 / sr_factor:g} m "
            f"({sr_factor}x finer than the {res10:g} m inputs of {scene.name!r})"
        )
    h10, w10 = scene.b10.shape[-2:]
    step = 6 * res10
    ph, pw = product.data.shape[-2:]
    left = max(left0, pleft)
    top = min(top0, ptop)
    right = min(left0 + w10 * res10, pleft + pw * pa)
    bottom = max(top0 - h10 * res10, ptop - ph * pa)
    left = left0 + math.ceil((left - left0) / step - 1e-6) * step
    top = top0 - math.ceil((top0 - top) / step - 1e-6) * step
    n60x = math.floor((right - left) / step + 1e-6)
    n60y = math.floor((top - bottom) / step + 1e-6)
    if n60x < 1 or n60y < 1:
        raise DataError(
            f"SR product {product.path!r} does not overlap its inputs {scene.name!r} by one 60 m pixel"
        )
    pcol, prow = (left - pleft) / pa, (ptop - top) / pa
    if abs(pcol - round(pcol)) > 1e-3 or abs(prow - round(prow)) > 1e-3:
        raise DataError(
            f"SR product {product.path!r} is not on the pixel grid of its inputs {scene.name!r} "
            f"(offset {pcol:.3f}, {prow:.3f} product pixels)"
        )
    x10, y10 = round((left - left0) / res10), round((top0 - top) / res10)
    H, W = 6 * n60y, 6 * n60x
    groups = []
    for arr, group in zip(scene.groups, BAND_GROUPS, strict=True):
        k = group.factor_to_10m
        groups.append(arr[:, y10 // k : (y10 + H) // k, x10 // k : (x10 + W) // k])
    sr = product.data[:, round(prow) : round(prow) + sr_factor * H, round(pcol) : round(pcol) + sr_factor * W]
    cut = Scene(
        name=scene.name,
        b10=groups[0],
        b20=groups[1],
        b60=groups[2],
        crs=scene.crs,
        transform=(res10, 0.0, left, 0.0, -res10, top),
    )
    return sr, cut
