"""The MGRS 100 km grid (the Sentinel-2 tiling names), computed from UTM zones and latitude bands.

Pure geometry on shapely + pyproj; no I/O. A *grid square* is the intersection of one MGRS grid zone
(UTM zone x 8-degree latitude band, with the Norway/Svalbard exceptions) with one 100 km x 100 km
UTM square. Its id is the grid zone designator plus two letters, e.g. ``29UPV`` (zone 29, band U,
column P, row V): the id Sentinel-2 products carry as their tile. Sentinel-2 tiles themselves are
109.8 km squares that start at the MGRS square's north-west corner and overlap their east and south
neighbours by 9.8 km; a work unit covers the MGRS square, so neighbouring units do not repeat work.

Lettering (MGRS "new" AA scheme, WGS 84, as in NGA STND0037):
- column letters: zone % 3 == 1 -> A..H, == 2 -> J..R, == 0 -> S..Z, for eastings 100..900 km;
- row letters: A..V (no I, O) cycling every 2000 km of northing (southern northings include the
  10 000 km false northing), shifted by 5 letters in even zones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ConfigError

#: Latitude band letters, 8 degrees each from 80 S; X spans 72..84 N.
BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMN_SETS = {1: "ABCDEFGH", 2: "JKLMNPQR", 0: "STUVWXYZ"}
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
#: Grid square size, metres.
SQUARE_M = 100_000
#: MGRS covers 80 S .. 84 N; the poles use UPS, which Sentinel-2 does not tile.
MIN_LAT, MAX_LAT = -80.0, 84.0
#: Densification step before reprojecting polygon edges, degrees (~1 km) and metres.
_DENSIFY_DEG = 0.01
_DENSIFY_M = 1000.0
#: Intersections smaller than this are edge contacts, not work, square metres.
_MIN_AREA_M2 = 1.0


@dataclass(frozen=True, kw_only=True)
class GridSquare:
    """One MGRS 100 km grid square clipped to a region.

    Attributes:
        tile_id: MGRS id, e.g. "29UPV" (zone zero-padded to 2 digits, as Sentinel-2 names tiles).
        epsg: EPSG code of the square's UTM zone (326zz north, 327zz south).
        bbox: lon/lat bounds (west, south, east, north) of the clipped square, degrees, WGS 84.
        area_km2: area of the clipped square measured in its UTM zone, km^2.
    """

    tile_id: str
    epsg: int
    bbox: tuple[float, float, float, float]
    area_km2: float


def band_letter(lat: float) -> str:
    """Latitude band letter of a latitude in degrees (84 N itself belongs to X)."""
    if not MIN_LAT <= lat <= MAX_LAT:
        raise ConfigError(f"latitude {lat} is outside MGRS coverage (80 S to 84 N); pick an AOI inside it")
    return BAND_LETTERS[min(int((lat - MIN_LAT) // 8), len(BAND_LETTERS) - 1)]


def band_bounds(letter: str) -> tuple[float, float]:
    """(south, north) latitude bounds of a band letter, degrees."""
    i = BAND_LETTERS.index(letter)
    south = MIN_LAT + 8 * i
    return south, (MAX_LAT if letter == "X" else south + 8)


def zone_cells(letter: str) -> list[tuple[int, float, float]]:
    """The grid zones of one latitude band as (zone, west, east) longitude ranges, degrees.

    Applies the two MGRS exceptions: band V has zone 31 on 0..3 E and 32 on 3..12 E (Norway);
    band X has 31 on 0..9 E, 33 on 9..21, 35 on 21..33, 37 on 33..42, and no 32/34/36 (Svalbard).
    """
    cells = []
    for zone in range(1, 61):
        west, east = -180.0 + 6 * (zone - 1), -180.0 + 6 * zone
        if letter == "V" and zone == 31:
            east = 3.0
        elif letter == "V" and zone == 32:
            west = 3.0
        elif letter == "X" and zone in (32, 34, 36):
            continue
        elif letter == "X" and zone in (31, 33, 35, 37):
            west, east = {31: (0.0, 9.0), 33: (9.0, 21.0), 35: (21.0, 33.0), 37: (33.0, 42.0)}[zone]
        cells.append((zone, west, east))
    return cells


def utm_epsg(zone: int, letter: str) -> int:
    """EPSG code of the UTM projection of a grid zone (bands C..M are southern)."""
    return (32700 if letter < "N" else 32600) + zone


def square_id(zone: int, letter: str, easting: float, northing: float) -> str:
    """MGRS id of the 100 km square holding a UTM coordinate.

    Args:
        zone: UTM zone number 1..60.
        letter: latitude band letter.
        easting: UTM easting, metres (100 km .. 900 km).
        northing: UTM northing, metres, including the 10 000 km false northing in the south.
    """
    col_index = int(easting // SQUARE_M)
    if not 1 <= col_index <= 8:
        raise ConfigError(f"easting {easting:.0f} m is outside UTM zone {zone}'s 100..900 km MGRS columns")
    col = _COLUMN_SETS[zone % 3][col_index - 1]
    row = _ROW_LETTERS[(int(northing // SQUARE_M) + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{letter}{col}{row}"


def _reproject(geom: BaseGeometry, transformer: Transformer, step: float) -> BaseGeometry:
    """Densify edges every `step` (source units), then reproject every vertex."""
    dense = shapely.segmentize(geom, step)
    return shapely.transform(dense, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def grid_squares(region: BaseGeometry) -> list[GridSquare]:
    """Every MGRS 100 km grid square that a lon/lat region overlaps, clipped to that region.

    Args:
        region: polygonal shapely geometry in lon/lat degrees (WGS 84), inside 80 S .. 84 N and
            -180 .. 180 (split a region that crosses the antimeridian into two polygons).

    Returns:
        Grid squares sorted by tile id, each with the clipped square's lon/lat bbox and km^2 area.
        A square split by a latitude-band edge yields two ids (e.g. 31TDN and 31UDN), as in MGRS.
    """
    west, south, east, north = region.bounds
    if south < MIN_LAT or north > MAX_LAT or west < -180 or east > 180:
        raise ConfigError(
            f"AOI bounds ({west}, {south}, {east}, {north}) leave MGRS coverage (lon -180..180, "
            "lat 80 S..84 N); clip the AOI or split it at the antimeridian"
        )
    squares: dict[str, GridSquare] = {}
    for letter in BAND_LETTERS:
        b_south, b_north = band_bounds(letter)
        if b_north <= south or b_south >= north:
            continue
        for zone, z_west, z_east in zone_cells(letter):
            if z_east <= west or z_west >= east:
                continue
            part = region.intersection(box(z_west, b_south, z_east, b_north))
            if part.is_empty or part.area == 0:
                continue
            squares.update({s.tile_id: s for s in _squares_in_cell(part, zone, letter)})
    return [squares[k] for k in sorted(squares)]


def _squares_in_cell(part: BaseGeometry, zone: int, letter: str) -> list[GridSquare]:
    """Grid squares of one grid zone that overlap `part` (lon/lat, already inside the zone)."""
    epsg = utm_epsg(zone, letter)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    utm = _reproject(part, to_utm, _DENSIFY_DEG)
    minx, miny, maxx, maxy = utm.bounds
    out = []
    for e0 in range(int(minx // SQUARE_M), int(maxx // SQUARE_M) + 1):
        for n0 in range(int(miny // SQUARE_M), int(maxy // SQUARE_M) + 1):
            sq = box(e0 * SQUARE_M, n0 * SQUARE_M, (e0 + 1) * SQUARE_M, (n0 + 1) * SQUARE_M)
            clipped = utm.intersection(sq)
            if clipped.is_empty or clipped.area < _MIN_AREA_M2:
                continue
            w, s, e, n = _reproject(clipped, to_lonlat, _DENSIFY_M).bounds
            out.append(
                GridSquare(
                    tile_id=square_id(zone, letter, (e0 + 0.5) * SQUARE_M, (n0 + 0.5) * SQUARE_M),
                    epsg=epsg,
                    bbox=_outward((w, s, e, n)),
                    area_km2=clipped.area / 1e6,
                )
            )
    return out


def _outward(bbox: tuple[float, float, float, float], ndigits: int = 6) -> tuple[float, float, float, float]:
    """Round a lon/lat bbox outward to `ndigits` decimals (1e-6 deg ~ 0.1 m), so it still covers."""
    q = 10**ndigits
    w, s, e, n = bbox
    return (math.floor(w * q) / q, math.floor(s * q) / q, math.ceil(e * q) / q, math.ceil(n * q) / q)
