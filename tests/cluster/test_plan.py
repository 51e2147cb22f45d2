"""`difffusr plan`: MGRS work units of a real AOI, their counts, estimates and the resume contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pyproj import Geod, Transformer
from shapely.geometry import Point

from pipeline.catalog.query import parse_datetime_range
from pipeline.cli import main
from pipeline.cluster.mgrs_grid import band_letter, grid_squares, zone_cells
from pipeline.cluster.plan import (
    BYTES_PER_PIXEL,
    PIXELS_PER_KM2,
    date_windows,
    load_plan,
    pending_units,
    read_aoi,
    unit_output,
    unit_tiles,
)
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
AOI = Path(__file__).parent / "data" / "dublin_wicklow.geojson"


def test_plan_of_dublin_wicklow_gives_its_two_tiles_times_three_months(tmp_path, capsys):
    out = tmp_path / "jobs.json"
    rc = main(
        [
            "plan",
            "--aoi",
            str(AOI),
            "--datetime",
            "2024-06-01/2024-08-31",
            "--window",
            "month",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "6 work units = 2 MGRS tiles x 3 date windows" in printed
    units = load_plan(out)
    # Dublin lies in Sentinel-2 tile 29UPV, Wicklow in 29UPU (checked against the NGA GeoTrans `mgrs`
    # package on 25k random points of this polygon: 65 % / 35 % of them, matching the areas below).
    assert [(u.tile_id, u.datetime) for u in units] == [
        ("29UPU", "2024-06-01/2024-06-30"),
        ("29UPU", "2024-07-01/2024-07-31"),
        ("29UPU", "2024-08-01/2024-08-31"),
        ("29UPV", "2024-06-01/2024-06-30"),
        ("29UPV", "2024-07-01/2024-07-31"),
        ("29UPV", "2024-08-01/2024-08-31"),
    ]
    assert {u.epsg for u in units} == {32629}
    # The clipped squares partition the AOI: their UTM areas add up to its geodesic area.
    region = read_aoi(AOI)
    geodesic_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(region)[0]) / 1e6
    per_window = sum(u.area_km2 for u in units) / 3
    assert per_window == pytest.approx(geodesic_km2, rel=2e-3)
    # Each unit's bbox lies within the AOI's bounds, and together they cover them.
    w, s, e, n = region.bounds
    assert min(u.bbox[0] for u in units) <= w and max(u.bbox[2] for u in units) >= e
    assert min(u.bbox[1] for u in units) <= s and max(u.bbox[3] for u in units) >= n
    doc = json.loads(out.read_text())
    expected_bytes = sum(u.area_km2 for u in units) * PIXELS_PER_KM2 * BYTES_PER_PIXEL
    assert doc["totals"]["output_bytes"] == pytest.approx(expected_bytes, rel=1e-9)
    assert BYTES_PER_PIXEL == 24  # 12 bands x uint16
    assert units[0].key == "29UPU/2024-06-01_2024-06-30"


def _real_items():
    """(tile id, EPSG, UL x, UL y) of every real Sentinel-2 item shipped under data/samples/stac_items."""
    for path in sorted((REPO / "data" / "samples" / "stac_items").rglob("*.json")):
        doc = json.loads(path.read_text())
        for item in doc.get("features", [doc]) if isinstance(doc, dict) else []:
            match = re.search(r"_T?(\d\d[C-X][A-Z]{2})_", item.get("id", "") + "_")
            assets = [a for a in item.get("assets", {}).values() if "proj:transform" in a]
            if item.get("type") != "Feature" or not match or not assets:
                continue
            code = item["properties"].get("proj:epsg") or item["properties"].get("proj:code") or ""
            code = code or assets[0].get("proj:epsg") or assets[0].get("proj:code")
            transform = assets[0]["proj:transform"]
            yield match.group(1), int(str(code).removeprefix("EPSG:")), transform[2], transform[5]


def _in_zone(lon: float, lat: float, zone: int) -> bool:
    return any(z == zone and west <= lon < east for z, west, east in zone_cells(band_letter(lat)))


def test_tile_ids_match_real_sentinel2_items_of_every_provider():
    checked = set()
    for tile_id, epsg, ulx, uly in _real_items():
        # A Sentinel-2 tile starts at its MGRS square's north-west corner. Probe the square at points
        # 10..90 km east and south of the tile's upper-left corner, keeping one inside the UTM zone
        # (Sentinel-2 also has tiles like 58UGE whose square lies beyond its zone's edge: skipped).
        to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
        probes = [
            to_lonlat.transform(ulx + dx, uly - dy) for dx in (50e3, 10e3, 90e3) for dy in (50e3, 10e3, 90e3)
        ]
        inside = [p for p in probes if _in_zone(*p, int(tile_id[:2]))]
        if not inside:
            continue
        lon, lat = inside[0]
        squares = grid_squares(Point(lon, lat).buffer(1e-4))
        assert [sq.tile_id for sq in squares] == [tile_id], (tile_id, lon, lat)
        assert squares[0].epsg == epsg
        checked.add(tile_id)
    # Northern and southern hemispheres, zones 1 to 60, bands K to V.
    assert len(checked) >= 30 and {"01KAB", "60VUK", "20EPT", "24MVV", "35UPU"} <= checked


@pytest.mark.parametrize(
    ("lon", "lat", "tile_id"),
    [
        (5.5, 60.4, "32VLN"),  # Bergen: zone 32 widened over 3..12 E in band V
        (1.5, 60.4, "31VDG"),  # west of 3 E in band V stays zone 31
        (15.6, 78.2, "33XWG"),  # Longyearbyen: zone 33 spans 9..21 E in band X
        (-6.26, 53.35, "29UPV"),  # Dublin
    ],
)
def test_zone_exceptions_of_norway_and_svalbard(lon, lat, tile_id):
    # Expected ids from the NGA GeoTrans-based `mgrs` package (MGRSPrecision=0).
    assert [sq.tile_id for sq in grid_squares(Point(lon, lat).buffer(1e-4))] == [tile_id]


def test_rerun_of_plan_skips_units_whose_manifest_exists(tmp_path):
    plan = tmp_path / "jobs.json"
    main(
        [
            "plan",
            "--aoi",
            str(AOI),
            "--datetime",
            "2024-06-01/2024-06-20",
            "--window",
            "10d",
            "--out",
            str(plan),
        ]
    )
    units = load_plan(plan)
    assert [u.datetime for u in units[:2]] == ["2024-06-01/2024-06-10", "2024-06-11/2024-06-20"]
    root = tmp_path / "out"
    assert pending_units(units, str(root)) == units
    done = Path(unit_output(str(root), units[1]))
    done.mkdir(parents=True)
    (done / "mosaic.tif").write_bytes(b"")  # data without the marker: still pending
    assert pending_units(units, str(root)) == units
    (done / "manifest.json").write_text("{}")
    assert pending_units(units, str(root)) == [units[0], *units[2:]]


def test_date_windows_split_months_and_days():
    start, end = (t.date() for t in parse_datetime_range("2024-01-15/2024-03-02"))
    assert date_windows(start, end, "month") == [
        "2024-01-15/2024-01-31",
        "2024-02-01/2024-02-29",
        "2024-03-01/2024-03-02",
    ]
    assert date_windows(start, end, "all") == ["2024-01-15/2024-03-02"]
    assert len(date_windows(start, end, "7d")) == 7


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        ("2024-06-30/2024-06-01", "ends before it starts"),
        ("June 2024", "not an ISO date"),
        ("2024-06-01/", "must be START/END"),
    ],
)
def test_bad_plan_dates_are_one_line_and_write_nothing(tmp_path, capsys, dates, message):
    out = tmp_path / "jobs.json"
    assert main(["plan", "--aoi", str(AOI), "--datetime", dates, "--out", str(out)]) == 2
    assert message in _one_error_line(capsys) and not out.exists()


def test_bad_plan_inputs_say_what_to_fix(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--window 'weekly'"):
        date_windows(*(t.date() for t in parse_datetime_range("2024-06-01/2024-06-30")), "weekly")
    point = tmp_path / "point.geojson"
    point.write_text(json.dumps({"type": "Point", "coordinates": [-6.2, 53.3]}))
    with pytest.raises(ConfigError, match="no polygon area"):
        read_aoi(point)
    with pytest.raises(ConfigError, match="not a difffusr plan"):
        load_plan(point)
    polar = tmp_path / "polar.geojson"
    polar.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 85], [1, 85], [1, 86], [0, 85]]]}))
    assert main(["plan", "--aoi", str(polar), "--datetime", "2024-06-01/2024-06-30"]) == 2
    assert "MGRS coverage" in _one_error_line(capsys)
    junk = tmp_path / "junk.geojson"
    junk.write_text("{not json")
    assert main(["plan", "--aoi", str(junk), "--datetime", "2024-06-01/2024-06-30"]) == 2
    assert "cannot read AOI" in _one_error_line(capsys)
    assert (
        main(["plan", "--aoi", str(tmp_path / "missing.geojson"), "--datetime", "2024-06-01/2024-06-30"]) == 2
    )
    assert "cannot read AOI" in _one_error_line(capsys)
    assert (
        main(
            [
                "plan",
                "--aoi",
                str(AOI),
                "--datetime",
                "2024-06-01/2024-06-30",
                "--out",
                str(tmp_path / "no" / "such" / "jobs.json"),
            ]
        )
        == 2
    )
    assert "cannot write plan" in _one_error_line(capsys)


def test_resume_contract_holds_on_s3(s3_env, tmp_path):
    """pending_units reads the done markers through fsspec: the loopback S3 endpoint (moto server)."""
    import fsspec

    plan = tmp_path / "jobs.json"
    main(["plan", "--aoi", str(AOI), "--datetime", "2024-06-01/2024-06-30", "--out", str(plan)])
    units = load_plan(plan)
    root = "s3://difffusr-plan-test/production"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("difffusr-plan-test")
    assert pending_units(units, root) == units
    marker = unit_output(root, units[0]) + "/manifest.json"
    assert marker == "s3://difffusr-plan-test/production/29UPU/2024-06-01_2024-06-30/manifest.json"
    fs.pipe(marker, b"{}")
    fs.invalidate_cache()
    assert pending_units(units, root) == units[1:]


def test_plan_estimates_from_a_rates_file_the_scale_benchmark_writes(tmp_path, capsys):
    from benchmarks.scale import rates_of

    # one measured run as `benchmarks.scale` records it (the 420-tile bicubic row of benchmarks/RESULTS.md)
    row = {"accelerator_s": 120.0, "cog_bytes": 600_000_000, "area_km2": 400.0, "tiles": 420}
    row |= {"precision": "auto", "steps": None}
    args = type(
        "Args",
        (),
        {"cpus": 2, "method": "bicubic", "scene": Path("scene"), "stac_url": None, "tile_size": 96},
    )()
    rates_file = tmp_path / "rates.json"
    doc = rates_of(row, {"cpu_model": "AMD EPYC"}, args)
    rates_file.write_text(json.dumps(doc))
    out = tmp_path / "jobs.json"
    argv = ["plan", "--aoi", str(AOI), "--datetime", "2024-06-01/2024-06-30", "--rates", str(rates_file)]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "measured 0.286 s per 96 px tile on cpu: AMD EPYC, 2 cores" in printed
    units = load_plan(out)
    totals = json.loads(out.read_text())["totals"]
    km2 = sum(u.area_km2 for u in units)
    # per tile: each unit's cells on its zone lattice (96 px cores, 12 px halo) x the measured seconds
    tiles = [unit_tiles(u, 96, 12) for u in units]
    assert all(t > u.area_km2 / 0.9216 for t, u in zip(tiles, units))  # >= the area in 0.92 km^2 cores
    assert totals["gpu_hours"] == pytest.approx(sum(tiles) * 120.0 / 420 / 3600)
    assert totals["output_bytes"] == pytest.approx(km2 * 1.5e6, rel=1e-9)  # measured COG bytes, not raw
    for key in ("accelerator_seconds_per_tile", "tile_core", "tile_halo"):  # an older rates file: per km^2
        doc.pop(key)
    rates_file.write_text(json.dumps(doc))
    assert main([*argv, "--out", str(out)]) == 0
    assert "measured 0.3 s/km2 on cpu: AMD EPYC, 2 cores" in capsys.readouterr().out
    assert json.loads(out.read_text())["totals"]["gpu_hours"] == pytest.approx(km2 * 0.3 / 3600)
    rates_file.write_text('{"format": "difffusr-rates", "version": 1, "accelerator_seconds_per_km2": -1}')
    assert main(argv) == 2
    assert "the per-km2 rates must be positive" in capsys.readouterr().err
    rates_file.write_text("{}")
    assert main(argv) == 2
    assert "is not a difffusr rates file" in capsys.readouterr().err
