"""The scene's target grid: where the AOI lands on the 10 m / 20 m / 60 m / 2.5 m grids.

`resolve_grid` picks the AOI's UTM zone (or the user's CRS), and snaps the AOI outwards to multiples of
60 m so that all four grids nest exactly: one 60 m pixel is exactly 6x6 10 m pixels and 24x24 output pixels.

`job_grid` lays the tiles on it in one of two ways (`--grid`):
- "aoi": the tiles start at the AOI's corner; the product is the AOI (the tile layout of the job alone);
- "zone": the tiles are the cells of a lattice fixed per CRS (tile cores at multiples of core x 10 m from the
  CRS origin), namely the cells whose windows (core + halo) reach the AOI; the scene is their cores, the
  product the AOI inside it (nodata around). Each tile is seeded by its lattice index. Any two jobs in one
  CRS then read the same windows and draw the same noise for a tile, and blend the same tiles into a pixel:
  their outputs agree bit for bit where they overlap, so adjacent plan units meet without a seam.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS, Transformer

from pipeline.config import check_crs
from pipeline.errors import ConfigError
from pipeline.tiling.grid import GRID_ANCHORS, SR_FACTOR, GridAnchor, TileKey, TileLayout

SNAP_M = 60.0


@dataclass(frozen=True, kw_only=True)
class SceneGrid:
    """A north-up grid at 10 m.

    Attributes:
        crs: CRS as "EPSG:nnnn" (projected, metres).
        left, top: upper-left corner, metres; multiples of 60.
        height, width: size in 10 m pixels; multiples of 6.
    """

    crs: str
    left: float
    top: float
    height: int
    width: int

    def transform(self, gsd: float = 10.0) -> Affine:
        return Affine(gsd, 0.0, self.left, 0.0, -gsd, self.top)

    def geobox(self, gsd: float = 10.0) -> GeoBox:
        k = 10.0 / gsd
        return GeoBox((round(self.height * k), round(self.width * k)), self.transform(gsd), self.crs)

    def window_geobox(self, layout: TileLayout, key: TileKey, gsd: float) -> GeoBox:
        """GeoBox of one tile's window (core + halo) at `gsd` metres."""
        y0, x0 = layout.window_origin(key)
        size = round(layout.window * 10.0 / gsd)
        aff = Affine(gsd, 0.0, self.left + x0 * 10.0, 0.0, -gsd, self.top - y0 * 10.0)
        return GeoBox((size, size), aff, self.crs)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS, metres."""
        return (self.left, self.top - self.height * 10.0, self.left + self.width * 10.0, self.top)

    @property
    def area_km2(self) -> float:
        return self.height * self.width * 1e-4

    def output_shape(self) -> tuple[int, int]:
        return self.height * SR_FACTOR, self.width * SR_FACTOR

    def to_dict(self) -> dict:
        return asdict(self)


def utm_crs_for(lon: float, lat: float) -> str:
    """The WGS84/UTM zone CRS ("EPSG:326zz" north, "EPSG:327zz" south) containing a point."""
    zone = min(math.floor((lon + 180.0) / 6.0) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def resolve_grid(bbox_lonlat: tuple[float, float, float, float], crs: str | None = None) -> SceneGrid:
    """Snap a lon/lat AOI onto a 60 m-aligned grid in its UTM zone (or `crs`)."""
    w, s, e, n = bbox_lonlat
    target = crs or utm_crs_for((w + e) / 2, (s + n) / 2)
    check_crs(target)  # the one CRS rule (RunConfig applies it to --crs at construction)
    crs_obj = CRS.from_user_input(target)
    epsg = crs_obj.to_epsg()
    crs_str = f"EPSG:{epsg}" if epsg else crs_obj.to_wkt()
    left, bottom, right, top = Transformer.from_crs("EPSG:4326", crs_obj, always_xy=True).transform_bounds(
        w, s, e, n
    )
    if not all(math.isfinite(v) for v in (left, bottom, right, top)):
        raise ConfigError(f"the AOI {bbox_lonlat} cannot be projected to {target}; pick a CRS that covers it")
    left, bottom = math.floor(left / SNAP_M) * SNAP_M, math.floor(bottom / SNAP_M) * SNAP_M
    right, top = math.ceil(right / SNAP_M) * SNAP_M, math.ceil(top / SNAP_M) * SNAP_M
    return SceneGrid(
        crs=crs_str, left=left, top=top, height=round((top - bottom) / 10), width=round((right - left) / 10)
    )


@dataclass(frozen=True, kw_only=True)
class JobGrid:
    """Where a job's tiles and product lie.

    Attributes:
        grid: the scene the tiles cover (10 m): the AOI itself, or the lattice cells around it ("zone").
        layout: the tiles on `grid`.
        aoi: the product: the AOI snapped to 60 m (equal to `grid` for "aoi").
    """

    grid: SceneGrid
    layout: TileLayout
    aoi: SceneGrid

    def search_bbox(self) -> tuple[float, float, float, float]:
        """lon/lat bbox of every pixel a tile window reads, for the STAC search: a granule that covers only a
        halo still shapes the tiles' inputs, and must be found by every job that reads that halo."""
        margin = self.layout.halo * 10.0
        left, bottom, right, top = self.grid.bounds
        w, s, e, n = Transformer.from_crs(self.grid.crs, "EPSG:4326", always_xy=True).transform_bounds(
            left - margin, bottom - margin, right + margin, top + margin, densify_pts=21
        )
        return (w, s, e, n)


def job_grid(
    bbox_lonlat: tuple[float, float, float, float],
    crs: str | None = None,
    *,
    core: int,
    halo: int,
    anchor: GridAnchor = "aoi",
) -> JobGrid:
    """The scene, tile layout and product of a job over `bbox_lonlat` (see the module docstring)."""
    aoi = resolve_grid(bbox_lonlat, crs)
    if anchor == "aoi":
        return JobGrid(
            grid=aoi, layout=TileLayout(height=aoi.height, width=aoi.width, core=core, halo=halo), aoi=aoi
        )
    if anchor != "zone":
        raise ConfigError(f"--grid {anchor!r} is not one of {', '.join(GRID_ANCHORS)}")
    size, margin = core * 10.0, halo * 10.0
    left, bottom, right, top = aoi.bounds
    # Lattice cell (row, col) has its core at x in [col, col + 1) * size, y in (-(row + 1), -row] * size; it
    # is a tile when its window (core grown by the halo) overlaps the AOI.
    col0, col1 = math.floor((left - margin) / size), math.ceil((right + margin) / size)
    row0, row1 = math.floor((-top - margin) / size), math.ceil((-bottom + margin) / size)
    grid = SceneGrid(
        crs=aoi.crs,
        left=col0 * size,
        top=-row0 * size + 0.0,
        height=(row1 - row0) * core,
        width=(col1 - col0) * core,
    )
    y0, x0 = round((grid.top - top) / 10.0), round((left - grid.left) / 10.0)
    layout = TileLayout(
        height=grid.height,
        width=grid.width,
        core=core,
        halo=halo,
        origin=(row0, col0),
        valid=(y0, y0 + aoi.height, x0, x0 + aoi.width),
    )
    return JobGrid(grid=grid, layout=layout, aoi=aoi)
