"""Pure validation of what the user asks the catalog for (no network).

`resolve_query` turns raw CLI strings into a `SearchQuery` or raises `ConfigError` naming the bad value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from pipeline.errors import ConfigError

EARTH_SEARCH_V1 = "https://earth-search.aws.element84.com/v1"
DEFAULT_COLLECTION = "sentinel-2-l2a"
_MGRS_RE = re.compile(r"^\d{1,2}[C-HJ-NP-X][A-HJ-NP-Z]{2}$")


@dataclass(frozen=True, kw_only=True)
class SearchQuery:
    """A validated STAC search.

    Attributes:
        stac_url: root URL of a STAC API.
        collection: collection id, e.g. "sentinel-2-l2a".
        bbox: (west, south, east, north), degrees, EPSG:4326.
        start, end: inclusive UTC datetime range.
        max_cloud: maximum item `eo:cloud_cover`, percent (None: no filter).
        mgrs_tiles: optional MGRS tile ids ("32TNT") an item must belong to.
        max_items: upper bound on items fetched.
    """

    stac_url: str = EARTH_SEARCH_V1
    collection: str = DEFAULT_COLLECTION
    bbox: tuple[float, float, float, float]
    start: datetime
    end: datetime
    max_cloud: float | None = None
    mgrs_tiles: tuple[str, ...] = field(default_factory=tuple)
    max_items: int = 500

    @property
    def datetime_range(self) -> str:
        """The STAC API `datetime` parameter."""
        return f"{_iso(self.start)}/{_iso(self.end)}"


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse "W,S,E,N" in degrees; reject reversed, empty or out-of-range boxes."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4:
        raise ConfigError(
            f"--bbox {text!r} must be four numbers W,S,E,N in degrees, e.g. --bbox 13.05,48.20,13.10,48.23"
        )
    try:
        w, s, e, n = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"--bbox {text!r} has a value that is not a number; use W,S,E,N in degrees"
        ) from None
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise ConfigError(
            f"--bbox {text!r} is outside longitude [-180, 180] / latitude [-90, 90]; "
            "give it in degrees (EPSG:4326), not in projected metres"
        )
    if w >= e or s >= n:
        what = "west >= east" if w >= e else "south >= north"
        raise ConfigError(f"--bbox {text!r} is reversed or empty ({what}); the order is W,S,E,N")
    return (w, s, e, n)


def bbox_from_geojson(path: str | Path) -> tuple[float, float, float, float]:
    """Bounding box of every coordinate in a GeoJSON file (Feature, FeatureCollection or geometry)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--aoi {str(path)!r} is not a readable GeoJSON file ({exc})") from None
    coords: list[tuple[float, float]] = []

    def walk(node: object) -> None:
        if (
            isinstance(node, (list, tuple))
            and len(node) >= 2
            and all(isinstance(v, (int, float)) for v in node[:2])
        ):
            coords.append((float(node[0]), float(node[1])))
        elif isinstance(node, (list, tuple)):
            for child in node:
                walk(child)
        elif isinstance(node, dict):
            for key in ("features", "geometry", "geometries", "coordinates"):
                if key in node:
                    walk(node[key])

    walk(doc)
    if not coords:
        raise ConfigError(
            f"--aoi {str(path)!r} holds no coordinates; give a Polygon/MultiPolygon GeoJSON in EPSG:4326"
        )
    xs, ys = zip(*coords)
    return parse_bbox(f"{min(xs)},{min(ys)},{max(xs)},{max(ys)}")


def _parse_instant(text: str, *, end: bool) -> datetime:
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = date.fromisoformat(text)
            t = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return t.replace(hour=23, minute=59, second=59) if end else t
        dt = datetime.fromisoformat(text)  # Python >= 3.11 reads a trailing "Z"
    except ValueError:
        raise ConfigError(
            f"--datetime part {text!r} is not an ISO date; use START/END like 2023-06-01/2023-06-30"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_datetime_range(text: str) -> tuple[datetime, datetime]:
    """Parse "START/END" (dates or ISO datetimes, UTC); a single date means that whole day."""
    parts = str(text).split("/")
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"--datetime {text!r} must be START/END, e.g. 2023-06-01/2023-06-30")
    start, end = _parse_instant(parts[0], end=False), _parse_instant(parts[1], end=True)
    if start > end:
        raise ConfigError(f"--datetime {text!r} ends before it starts; swap START and END")
    return start, end


def parse_mgrs_tiles(text: str | None) -> tuple[str, ...]:
    """Parse a comma-separated list of MGRS tile ids ("32TNT,32TMT"); a leading "T" is accepted."""
    if not text:
        return ()
    tiles = []
    for raw in text.split(","):
        tile = raw.strip().upper().removeprefix("T")
        if not _MGRS_RE.match(tile):
            raise ConfigError(f"--mgrs-tiles entry {raw!r} is not an MGRS tile id like 32TNT")
        tiles.append(tile.zfill(5))
    return tuple(tiles)


@dataclass(frozen=True, kw_only=True)
class CatalogOptions:
    """Where and how to search, without the area and dates (a plan's units bring those).

    Attributes:
        stac_url, collection, max_cloud, mgrs_tiles, max_items: as in `SearchQuery`.
    """

    stac_url: str = EARTH_SEARCH_V1
    collection: str = DEFAULT_COLLECTION
    max_cloud: float | None = None
    mgrs_tiles: tuple[str, ...] = field(default_factory=tuple)
    max_items: int = 500

    def __post_init__(self) -> None:
        if not self.stac_url.startswith(("http://", "https://")):
            raise ConfigError(f"--stac-url {self.stac_url!r} is not an http(s) URL of a STAC API")
        if self.max_cloud is not None and not 0 <= self.max_cloud <= 100:
            raise ConfigError(f"--max-cloud {self.max_cloud!r} must be a percentage between 0 and 100")
        if self.max_items < 1:
            raise ConfigError(f"--max-items {self.max_items!r} must be at least 1")
        object.__setattr__(self, "stac_url", self.stac_url.rstrip("/"))

    def query(self, bbox: tuple[float, float, float, float], start: datetime, end: datetime) -> SearchQuery:
        """The search of one area (lon/lat degrees) and inclusive UTC datetime range."""
        return SearchQuery(
            stac_url=self.stac_url,
            collection=self.collection,
            bbox=bbox,
            start=start,
            end=end,
            max_cloud=self.max_cloud,
            mgrs_tiles=self.mgrs_tiles,
            max_items=self.max_items,
        )


def resolve_catalog(
    *,
    stac_url: str,
    collection: str,
    max_cloud: float | None = None,
    mgrs_tiles: str | None = None,
    max_items: int = 500,
) -> CatalogOptions:
    """Validate raw user options of the catalog (not the area or dates) into CatalogOptions."""
    return CatalogOptions(
        stac_url=stac_url,
        collection=collection,
        max_cloud=max_cloud,
        mgrs_tiles=parse_mgrs_tiles(mgrs_tiles),
        max_items=max_items,
    )


def resolve_query(
    *,
    stac_url: str,
    collection: str,
    bbox: str | None,
    aoi: str | None = None,
    datetime_range: str,
    max_cloud: float | None = None,
    mgrs_tiles: str | None = None,
    max_items: int = 500,
) -> SearchQuery:
    """Validate raw user options into a SearchQuery."""
    catalog = resolve_catalog(
        stac_url=stac_url,
        collection=collection,
        max_cloud=max_cloud,
        mgrs_tiles=mgrs_tiles,
        max_items=max_items,
    )
    if (bbox is None) == (aoi is None):
        raise ConfigError("give exactly one of --bbox W,S,E,N or --aoi FILE.geojson")
    box = parse_bbox(bbox) if bbox is not None else bbox_from_geojson(aoi)  # type: ignore[arg-type]
    return catalog.query(box, *parse_datetime_range(datetime_range))
