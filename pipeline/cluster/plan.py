"""Split a region x date range into work units and estimate their cost (`difffusr plan`: cli/cluster.py).

One work unit = one MGRS 100 km grid square (clipped to the AOI) x one date window. A plan file is
JSON (format ``difffusr-plan``, version 1)::

    {"format": "difffusr-plan", "version": 1, "aoi": "...", "datetime": "START/END", "window": "month",
     "rates": {...}, "totals": {...},
     "units": [{"tile_id": "29UPV", "epsg": 32629, "bbox": [W, S, E, N],
                "datetime": "2024-06-01/2024-06-30", "area_km2": 9981.2,
                "key": "29UPV/2024-06-01_2024-06-30"}]}

Resume contract (what `difffusr run --plan FILE --out ROOT` does with it):
- unit ``u`` writes everything under ``unit_output(ROOT, u)`` = ``ROOT/<tile_id>/<start>_<end>``
  (``ROOT`` is any fsspec URL: a folder or ``s3://bucket/prefix``), with ``--bbox u.bbox``,
  ``--datetime u.datetime`` and ``--crs EPSG:<u.epsg>`` (the square's own UTM zone);
- ``manifest.json`` is the last file a run writes, so its presence marks the unit done;
  ``pending_units(units, ROOT)`` returns the units without it, in plan order. A rerun of the same
  plan therefore skips finished units and redoes only interrupted or missing ones (whose own
  per-tile done markers make even those resume).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import fsspec
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.bands import S2_BANDS, TARGET_GSD_M
from pipeline.cluster.mgrs_grid import grid_squares
from pipeline.errors import ConfigError

PLAN_FORMAT = "difffusr-plan"
PLAN_VERSION = 1
#: The file whose presence marks a unit's output complete (written last by `difffusr run`).
DONE_MARKER = "manifest.json"

# Rates for the estimates. Source: benchmarks/RESULTS.md "Paper preset on CPU" (`python -m
# benchmarks.model_speed --compare --presets paper --window 120`, 2-core CPU, allocator env of the workers):
# the `paper` preset at its default steps (20, converted checkpoints) in bf16 (avx512_bf16 CPU) takes
# 38.5 s per production tile (120 px window at 10 m -> 480 x 480 output, 43.8 s scaled to 512 x 512), whose
# 96 px core is 0.92 km^2 at 2.5 m: 41.8 CPU-s/km^2 with the tile overlap. Until RESULTS.md holds a GPU
# measurement, that CPU rate is divided by an assumed 40x for one data-centre GPU: an estimate of the
# order of magnitude only. `difffusr plan --rates FILE` (measured by `benchmarks.scale --rates`) or
# `--gpu-seconds-per-km2` replaces it.
#: GPU seconds to super-resolve one km^2 of output (all 12 bands, 2.5 m), one date window.
GPU_SECONDS_PER_KM2 = 1.0
#: Bytes per output pixel: 12 bands x uint16 (the COG's storage type), before compression.
BYTES_PER_PIXEL = len(S2_BANDS) * 2
#: Output pixels per km^2 at the 2.5 m target grid.
PIXELS_PER_KM2 = 1e6 / TARGET_GSD_M**2


@dataclass(frozen=True, kw_only=True)
class WorkUnit:
    """One unit of production work: one MGRS grid square over one date window.

    Attributes:
        tile_id: MGRS 100 km square id, e.g. "29UPV".
        epsg: EPSG code of the square's UTM zone, the output CRS of the unit.
        bbox: (west, south, east, north) lon/lat degrees of the square clipped to the AOI.
        datetime: STAC datetime range "YYYY-MM-DD/YYYY-MM-DD" (both days inclusive).
        area_km2: area of the clipped square, km^2.
    """

    tile_id: str
    epsg: int
    bbox: tuple[float, float, float, float]
    datetime: str
    area_km2: float

    @property
    def key(self) -> str:
        """Relative output path of the unit: "<tile_id>/<start>_<end>"."""
        return f"{self.tile_id}/{self.datetime.replace('/', '_')}"


def unit_output(root: str, unit: WorkUnit) -> str:
    """Output folder (URL or path) of a unit under a plan's output root."""
    return f"{str(root).rstrip('/')}/{unit.key}"


def pending_units(units: Sequence[WorkUnit], root: str) -> list[WorkUnit]:
    """Units whose output under `root` lacks the done marker, in plan order (fsspec URLs work)."""
    fs, base = fsspec.core.url_to_fs(str(root))
    fs.invalidate_cache()  # a cached listing (s3fs) may predate markers written since
    return [u for u in units if not fs.exists(f"{base.rstrip('/')}/{u.key}/{DONE_MARKER}")]


# ----------------------------------------------------------------------------- pure planning
def read_aoi(path: str | Path) -> BaseGeometry:
    """Union of the polygons of a GeoJSON file (FeatureCollection, Feature or geometry), lon/lat."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read AOI {str(path)!r}: {exc}; pass a GeoJSON file to --aoi") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"AOI {str(path)!r} is not a GeoJSON object; pass a GeoJSON file to --aoi")
    kind = doc.get("type")
    geoms = (
        [f.get("geometry") for f in doc.get("features", [])]
        if kind == "FeatureCollection"
        else [doc.get("geometry")]
        if kind == "Feature"
        else [doc]
    )
    try:
        region = shapely.union_all([shape(g) for g in geoms if g])
    except (AttributeError, ValueError, TypeError, shapely.errors.GEOSException) as exc:
        raise ConfigError(f"AOI {str(path)!r} holds an invalid geometry: {exc}") from exc
    if region.is_empty or region.area == 0:
        raise ConfigError(
            f"AOI {str(path)!r} has no polygon area (type {kind!r}); give Polygon/MultiPolygon features"
        )
    return region if region.is_valid else region.buffer(0)


def date_windows(start: dt.date, end: dt.date, window: str) -> list[str]:
    """Split [start, end] (inclusive) into consecutive windows.

    Args:
        start, end: first and last day, inclusive.
        window: "all" (one window), "month" (calendar months, clipped to the range) or "<N>d"
            (N-day windows from `start`; the last may be shorter).

    Returns:
        STAC datetime ranges "YYYY-MM-DD/YYYY-MM-DD", in time order.
    """
    spans: list[tuple[dt.date, dt.date]] = []
    if window == "all":
        spans = [(start, end)]
    elif window == "month":
        day = start
        while day <= end:
            last = day.replace(day=calendar.monthrange(day.year, day.month)[1])
            spans.append((day, min(last, end)))
            day = last + dt.timedelta(days=1)
    elif m := re.fullmatch(r"([1-9][0-9]*)d", window):
        step = dt.timedelta(days=int(m.group(1)))
        day = start
        while day <= end:
            spans.append((day, min(day + step - dt.timedelta(days=1), end)))
            day += step
    else:
        raise ConfigError(f"--window {window!r} is not 'all', 'month' or '<N>d' (e.g. '10d')")
    return [f"{a.isoformat()}/{b.isoformat()}" for a, b in spans]


def make_units(region: BaseGeometry, windows: Sequence[str]) -> list[WorkUnit]:
    """Work units for every grid square of `region` x every window, tile-major order."""
    return [
        WorkUnit(tile_id=sq.tile_id, epsg=sq.epsg, bbox=sq.bbox, datetime=w, area_km2=sq.area_km2)
        for sq in grid_squares(region)
        for w in windows
    ]


RATES_FORMAT = "difffusr-rates"
RATES_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Rates:
    """Per-km^2 rates measured by `python -m benchmarks.scale --rates FILE` on the target hardware.

    Attributes:
        accelerator_seconds_per_km2: seconds the inference actors spent in calls per km^2 of output (summed
            over actors: GPU-seconds on a GPU cluster, actor-seconds on CPU workers).
        output_bytes_per_km2: bytes of the COG per km^2 (compressed, as written).
        device: what measured them (e.g. "cpu: AMD EPYC, 2 cores" or "cuda: NVIDIA H100").
        method, precision, steps: the job the rates are for.
        source: the file they were read from.
        accelerator_seconds_per_tile, tile_core, tile_halo: the same seconds per tile of that tiling (rates
            files from before them have none): a unit's cost is then its tile count on the zone lattice times
            this, which counts the tiles' overlap and the cells around a small unit that km^2 miss.
    """

    accelerator_seconds_per_km2: float
    output_bytes_per_km2: float
    accelerator_seconds_per_tile: float | None = None
    tile_core: int | None = None
    tile_halo: int | None = None
    device: str = "unknown"
    method: str = "difffusr"
    precision: str | None = None
    steps: int | None = None
    source: str = ""


def load_rates(path: str | Path) -> Rates:
    """Read a rates file written by the scale benchmark; ConfigError if it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read rates {str(path)!r}: {exc}; "
            "write one with `python -m benchmarks.scale --rates FILE`"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != RATES_FORMAT or doc.get("version") != RATES_VERSION:
        raise ConfigError(
            f"{str(path)!r} is not a difffusr rates file (version {RATES_VERSION}); write one with "
            "`python -m benchmarks.scale --rates FILE`"
        )
    rate, size = doc.get("accelerator_seconds_per_km2"), doc.get("output_bytes_per_km2")
    if not isinstance(rate, int | float) or rate <= 0 or not isinstance(size, int | float) or size <= 0:
        raise ConfigError(f"rates {str(path)!r}: the per-km2 rates must be positive numbers")
    per_tile, core, halo = (doc.get(k) for k in ("accelerator_seconds_per_tile", "tile_core", "tile_halo"))
    if per_tile is not None and not (
        isinstance(per_tile, int | float) and per_tile > 0 and core and halo is not None
    ):
        raise ConfigError(f"rates {str(path)!r}: accelerator_seconds_per_tile needs tile_core and tile_halo")
    return Rates(
        accelerator_seconds_per_km2=float(rate),
        output_bytes_per_km2=float(size),
        accelerator_seconds_per_tile=float(per_tile) if per_tile is not None else None,
        tile_core=int(core) if per_tile is not None else None,
        tile_halo=int(halo) if per_tile is not None else None,
        device=str(doc.get("device", "unknown")),
        method=str(doc.get("method", "difffusr")),
        precision=doc.get("precision"),
        steps=doc.get("steps"),
        source=str(path),
    )


def rates_document(
    *,
    accelerator_s: float,
    cog_bytes: int,
    area_km2: float,
    tiles: int,
    tile_core: int,
    tile_halo: int,
    **about: object,
) -> dict:
    """The rates file's content from one measured run (`benchmarks.scale`): its inference busy seconds,
    COG bytes, output area and tiles (of `tile_core` + `tile_halo`), plus what measured it (`about`: device,
    method, precision, steps, command)."""
    return {
        "format": RATES_FORMAT,
        "version": RATES_VERSION,
        "accelerator_seconds_per_km2": accelerator_s / area_km2,
        "accelerator_seconds_per_tile": accelerator_s / tiles,
        "output_bytes_per_km2": cog_bytes / area_km2,
        "area_km2": area_km2,
        "tiles": tiles,
        "tile_core": tile_core,
        "tile_halo": tile_halo,
        **about,
    }


def unit_tiles(unit: WorkUnit, core: int, halo: int) -> int:
    """Tiles a unit computes: the cells of its zone's lattice whose windows reach its area (`--grid zone`)."""
    from pipeline.io.grid import job_grid

    layout = job_grid(unit.bbox, f"EPSG:{unit.epsg}", core=core, halo=halo, anchor="zone").layout
    return layout.rows * layout.cols


def unit_seconds(unit: WorkUnit, rates: dict) -> float | None:
    """A unit's estimated accelerator-seconds from a plan's `rates` (a rates file's fields, or the built-in
    `gpu_seconds_per_km2`): per tile where the rates have it, else per km^2; None without a rate."""
    if rates.get("accelerator_seconds_per_tile") and rates.get("tile_core"):
        tiles = unit_tiles(unit, int(rates["tile_core"]), int(rates.get("tile_halo") or 0))
        return tiles * float(rates["accelerator_seconds_per_tile"])
    rate = rates.get("accelerator_seconds_per_km2") or rates.get("gpu_seconds_per_km2")
    return unit.area_km2 * float(rate) if rate else None


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """What a plan costs.

    Attributes:
        units: number of work units.
        tiles: number of distinct MGRS squares.
        windows: number of date windows.
        area_km2: AOI area covered per window, km^2.
        gpu_hours: estimated accelerator-hours for all units (GPU-hours, or actor-hours of CPU workers when
            the rates were measured on CPUs).
        output_bytes: output of all units, bytes: the measured COG bytes per km^2 with rates, else the
            uncompressed 12-band uint16 2.5 m size.
    """

    units: int
    tiles: int
    windows: int
    area_km2: float
    gpu_hours: float
    output_bytes: int


def estimate(
    units: Sequence[WorkUnit], gpu_seconds_per_km2: float = GPU_SECONDS_PER_KM2, rates: Rates | None = None
) -> Estimate:
    """Count units and estimate accelerator-hours and output bytes: from measured `rates` when given, else
    from `gpu_seconds_per_km2` and the uncompressed size."""
    total_km2 = sum(u.area_km2 for u in units)
    windows = {u.datetime for u in units}
    bytes_per_km2 = rates.output_bytes_per_km2 if rates else PIXELS_PER_KM2 * BYTES_PER_PIXEL
    rate_doc = asdict(rates) if rates else {"gpu_seconds_per_km2": gpu_seconds_per_km2}
    seconds = sum(unit_seconds(u, rate_doc) or 0.0 for u in units)
    return Estimate(
        units=len(units),
        tiles=len({u.tile_id for u in units}),
        windows=len(windows),
        area_km2=total_km2 / max(len(windows), 1),
        gpu_hours=seconds / 3600.0,
        output_bytes=round(total_km2 * bytes_per_km2),
    )


# ----------------------------------------------------------------------------- plan files
def write_plan(path: str | Path, units: Sequence[WorkUnit], meta: dict) -> None:
    """Write a plan JSON file (see the module docstring for the format)."""
    doc = {"format": PLAN_FORMAT, "version": PLAN_VERSION, **meta}
    doc["units"] = [{**asdict(u), "bbox": list(u.bbox), "key": u.key} for u in units]
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def load_plan(path: str | Path) -> list[WorkUnit]:
    """Read a plan file written by `difffusr plan` into its work units, in plan order."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read plan {str(path)!r}: {exc}; write one with `difffusr plan`") from exc
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
        raise ConfigError(f"{str(path)!r} is not a difffusr plan file; write one with `difffusr plan`")
    if doc.get("version") != PLAN_VERSION:
        raise ConfigError(
            f"plan {str(path)!r} has version {doc.get('version')!r}, this difffusr reads {PLAN_VERSION}; "
            "re-run `difffusr plan`"
        )
    try:
        return [
            WorkUnit(
                tile_id=str(u["tile_id"]),
                epsg=int(u["epsg"]),
                bbox=tuple(float(v) for v in u["bbox"]),  # type: ignore[arg-type]
                datetime=str(u["datetime"]),
                area_km2=float(u["area_km2"]),
            )
            for u in doc["units"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"plan {str(path)!r} has a malformed unit ({exc}); re-run `difffusr plan`") from exc


def human_bytes(n: float) -> str:
    """1234567 -> "1.2 MB" (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"
