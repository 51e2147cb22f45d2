"""Training scenes: scene folders read by the inference reader, as the band tensors the trainers use.

Training reads a scene folder exactly as `superres` does (`pipeline.io.scene_files.read_scene`: the same
band-file names, radiometry and nodata), so a model never trains on pixels it would see differently at
inference time. This module only changes the container (Scene -> band -> tensor) and, because the losses
cannot take NaN, cuts a scene's nodata border off before training.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.bands import BAND_GROUPS, NATIVE_GSD_M
from pipeline.errors import DataError, TrainingDataError
from pipeline.io.scene_files import Scene, find_band_file, read_scene

#: 10 m pixels per 60 m pixel: the unit a scene is cut by so that its 10/20/60 m grids stay nested.
_BLOCK = 6


#: Pixel size given to the 10 m grid of a patch that carries no georeference (identity transform).
_UNGEOREFERENCED_RES = 10.0


def read_any_scene(folder: str | Path) -> Scene:
    """`read_scene`, and also a patch folder whose band files carry no georeference.

    The BigEarthNet patches of `s2/bigearthnet_configilm` (1.2 km, native 10/20/60 m grids, 120/60/20 px)
    are plain TIFFs without CRS or transform: GDAL gives them the identity transform, which `read_scene`
    rejects as south-up. Their grids share the upper-left corner by BigEarthNet's design, so such a folder is
    read by pixel grid: every band must have the 1:2:6 shapes, DN / 10000 reflectance (no offset, no nodata,
    as that data's README states), a north-up 10 m transform at the origin and no CRS.

    Raises:
        AssetError, DataError: as `read_scene`; DataError when the shapes are not nested 1:2:6.
    """
    import rasterio

    try:
        with warnings.catch_warnings():  # a missing georeference is handled below
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return read_scene(folder)
    except DataError as exc:
        if "south-up" not in str(exc):
            raise

    folder = Path(folder)
    arrays = []
    shape10 = None
    for group in BAND_GROUPS:
        stack = []
        for band in group.bands:
            with warnings.catch_warnings():  # the missing georeference is why this path exists
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                src = rasterio.open(find_band_file(folder, band))
            with src:
                if src.crs is not None:
                    raise DataError(f"{band} of {str(folder)!r} is georeferenced but south-up or rotated")
                raw = src.read(1)
            stack.append(raw.astype(np.float32) / 10000.0)
        arr = np.stack(stack)
        k = group.factor_to_10m
        if shape10 is None:
            shape10 = arr.shape[-2:]
        if arr.shape[-2:] != (shape10[0] // k, shape10[1] // k) or shape10[0] % 6 or shape10[1] % 6:
            raise DataError(
                f"the {group.name} bands of {str(folder)!r} are {arr.shape[-2:]} px; without a georeference "
                f"they must be the 10 m grid {shape10} divided by {k} (10 m sides multiples of 6)"
            )
        arrays.append(arr)
    r = _UNGEOREFERENCED_RES
    return Scene(
        name=folder.name,
        b10=arrays[0],
        b20=arrays[1],
        b60=arrays[2],
        crs="",
        transform=(r, 0.0, 0.0, 0.0, -r, 0.0),
    )


def read_training_scene(folder: str | Path) -> dict[str, torch.Tensor]:
    """Read a scene folder for training.

    Args:
        folder: one GeoTIFF per band (`B01.tif` or `<name>_B01.tif`); grids may be coarser than native
            as long as the 1:2:6 ratios hold (e.g. the 100/200/600 m Western Sahara tile); patches without a
            georeference are read by pixel grid (`read_any_scene`).

    Returns:
        band -> (1, 1, h_b, w_b) float32 reflectance, NaN = nodata; the 10 m side h is a multiple of 6 and
        h_20 = h / 2, h_60 = h / 6.

    Raises:
        AssetError, DataError: as `pipeline.io.scene_files.read_scene`.
    """
    scene = read_any_scene(folder)
    return {
        band: torch.from_numpy(np.ascontiguousarray(arr[i]))[None, None]
        for arr, group in zip(scene.groups, BAND_GROUPS, strict=True)
        for i, band in enumerate(group.bands)
    }


def drop_nodata_border(scene: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Cut off the rows and columns of 60 m pixels, from the edges inwards, that hold nodata in any band.

    Each step removes the edge (top, bottom, left or right) with the most nodata 60 m pixels, until none is
    left (a swath-edge or tile-edge border is removed whole; the cut keeps the grids nested).

    Args:
        scene: band -> (1, 1, h_b, w_b) reflectance, NaN = nodata (as read_training_scene).
        name: the scene's folder, for the error message.

    Raises:
        TrainingDataError: nodata remains inside the scene, or nothing valid is left.
    """
    h60, w60 = (s // _BLOCK for s in scene["B02"].shape[-2:])
    ok = np.ones((h60, w60), dtype=bool)
    for band, t in scene.items():
        k = _BLOCK // (NATIVE_GSD_M[band] // 10)  # band pixels per 60 m pixel side
        finite = torch.isfinite(t[0, 0]).numpy()
        ok &= finite.reshape(h60, k, w60, k).all(axis=(1, 3))
    if ok.all():
        return scene
    r0, r1, c0, c1 = 0, h60, 0, w60
    while r0 < r1 and c0 < c1 and not ok[r0:r1, c0:c1].all():
        sub = ok[r0:r1, c0:c1]
        bad = {
            "top": (~sub[0]).sum(),
            "bottom": (~sub[-1]).sum(),
            "left": (~sub[:, 0]).sum(),
            "right": (~sub[:, -1]).sum(),
        }
        edge = max(bad, key=lambda e: bad[e])
        if bad[edge] == 0:
            raise TrainingDataError(
                f"training scene '{name}' has nodata inside its valid area; "
                "the losses cannot take nodata, so "
                "give a scene whose nodata (if any) lies only along its edges"
            )
        r0, r1 = r0 + (edge == "top"), r1 - (edge == "bottom")
        c0, c1 = c0 + (edge == "left"), c1 - (edge == "right")
    if r0 >= r1 or c0 >= c1:
        raise TrainingDataError(f"training scene '{name}' holds no 60 m pixel valid in all 12 bands")
    out = {}
    for band, t in scene.items():
        k = _BLOCK // (NATIVE_GSD_M[band] // 10)
        out[band] = t[..., r0 * k : r1 * k, c0 * k : c1 * k]
    return out
