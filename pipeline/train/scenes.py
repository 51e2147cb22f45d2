"""Training scenes: scene folders read by the inference reader, as the band tensors the trainers use.

Training reads a scene folder exactly as `superres` does (`pipeline.io.scene_files.read_scene`: the same
band-file names, radiometry and nodata), so a model never trains on pixels it would see differently at
inference time. This module only changes the container (Scene -> band -> tensor) and, because the losses
cannot take NaN, cuts a scene's nodata border off before training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.bands import BAND_GROUPS, NATIVE_GSD_M
from pipeline.errors import TrainingDataError
from pipeline.io.scene_files import read_scene

#: 10 m pixels per 60 m pixel: the unit a scene is cut by so that its 10/20/60 m grids stay nested.
_BLOCK = 6


def read_training_scene(folder: str | Path) -> dict[str, torch.Tensor]:
    """Read a scene folder for training.

    Args:
        folder: one GeoTIFF per band (`B01.tif` or `<name>_B01.tif`); grids may be coarser than native
            as long as the 1:2:6 ratios hold (e.g. the 100/200/600 m Western Sahara tile).

    Returns:
        band -> (1, 1, h_b, w_b) float32 reflectance, NaN = nodata; the 10 m side h is a multiple of 6 and
        h_20 = h / 2, h_60 = h / 6.

    Raises:
        AssetError, DataError: as `pipeline.io.scene_files.read_scene`.
    """
    scene = read_scene(folder)
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
