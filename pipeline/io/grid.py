"""The scene's target grid: where the AOI lands on the 10 m / 20 m / 60 m / 2.5 m grids.

`resolve_grid` picks the AOI's UTM zone (or the user's CRS), and snaps the AOI outwards to multiples of
60 m so that all four grids nest exactly: one 60 m pixel is exactly 6x6 10 m pixels and 24x24 output pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS, Transformer

from pipeline.config import check_crs
from pipeline.errors import ConfigError
from pipeline.tiling.grid import SR_FACTOR, TileKey, TileLayout

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
