"""`difffusr superres`: one scene folder of band GeoTIFFs -> one 12-band GeoTIFF at 4x the finest band."""

from __future__ import annotations

import time
from pathlib import Path

from affine import Affine

from pipeline.errors import OutputError
from pipeline.inference.methods import MethodOptions
from pipeline.inference.scene import super_resolve_scene_full
from pipeline.io.cog import UNCERTAINTY_DTYPE, UNCERTAINTY_TAGS, write_geotiff
from pipeline.io.scene_files import read_scene
from pipeline.tiling.grid import DEFAULT_CORE, DEFAULT_HALO, SR_FACTOR


def superres_folder(
    in_dir: str | Path,
    out_tif: str | Path,
    *,
    method: str,
    options: MethodOptions | None = None,
    dtype: str = "uint16",
    seed: int = 0,
    core: int = DEFAULT_CORE,
    halo: int = DEFAULT_HALO,
    on_tile=None,
) -> dict:
    """Super-resolve a scene folder (B01.tif ... B12.tif at any GSD with 1:2:6 ratios).

    Each tile's noise is seeded by `seed` and its position on the tile grid (`tiling.grid.tile_seed`), as in
    `difffusr run`: the output depends only on (inputs, weights, seed, core, halo). With
    `options.uncertainty` K >= 2 the output is the mean of K draws per tile and their per-pixel spread is
    written beside it as `uncertainty_path(out_tif)` (float32, as `difffusr run`'s uncertainty.tif).

    Returns:
        A summary dict: input and output shapes, GSDs, seconds.
    """
    out_tif = Path(out_tif)
    if not out_tif.parent.exists():
        raise OutputError(
            f"output folder '{out_tif.parent}' does not exist; create it or choose another OUT.tif path"
        )
    t0 = time.perf_counter()
    scene = read_scene(in_dir)
    sr, spread = super_resolve_scene_full(
        *scene.groups, method, options=options, seed=seed, core=core, halo=halo, on_tile=on_tile
    )
    gsd, _, left, _, _, top = scene.transform
    out_gsd = gsd / SR_FACTOR
    geo = {
        "height": sr.shape[1],
        "width": sr.shape[2],
        "transform": Affine(out_gsd, 0, left, 0, -out_gsd, top),
        "crs": scene.crs,
    }
    extra = {}
    if spread is not None:
        unc = uncertainty_path(out_tif)
        write_geotiff(
            unc, lambda y0, y1: spread[:, y0:y1], **geo, dtype=UNCERTAINTY_DTYPE, tags=UNCERTAINTY_TAGS
        )
        extra["uncertainty"] = str(unc)
    write_geotiff(out_tif, lambda y0, y1: sr[:, y0:y1], **geo, dtype=dtype)
    return {
        "input_10m_shape": list(scene.b10.shape[1:]),
        "input_gsd_m": gsd,
        "output_shape": list(sr.shape),
        "output_gsd_m": out_gsd,
        "seconds": round(time.perf_counter() - t0, 2),
        "output": str(out_tif),
        **extra,
    }


def uncertainty_path(out_tif: str | Path) -> Path:
    """Where `superres` writes the uncertainty layer of OUT.tif: OUT_uncertainty.tif beside it."""
    out_tif = Path(out_tif)
    return out_tif.with_name(f"{out_tif.stem}_uncertainty{out_tif.suffix or '.tif'}")
