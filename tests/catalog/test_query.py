"""Validation of the user's search options: every bad value gives a ConfigError that quotes it."""

from __future__ import annotations

import json

import pytest

from pipeline.catalog.query import (
    bbox_from_geojson,
    parse_bbox,
    parse_datetime_range,
    parse_mgrs_tiles,
    resolve_query,
)
from pipeline.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("13.8,48.2,13.7,48.3", "reversed or empty .west >= east"),
        ("13.7,48.3,13.8,48.2", "reversed or empty .south >= north"),
        ("13.7,48.2,13.7,48.3", "reversed or empty"),
        ("13.7,48.2,13.8", "four numbers"),
        ("a,b,c,d", "not a number"),
        ("400000,5300000,410000,5310000", "outside longitude"),
    ],
)
def test_bad_bbox_is_rejected_with_the_value(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_bbox(text)


def test_datetime_range_parses_dates_as_whole_days():
    start, end = parse_datetime_range("2017-06-01/2017-06-30")
    assert start.isoformat() == "2017-06-01T00:00:00+00:00"
    assert end.isoformat() == "2017-06-30T23:59:59+00:00"


@pytest.mark.parametrize(
    "text", ["2017-13-01/2017-06-30", "yesterday/today", "2017-06-01/", "2017-06-30/2017-06-01"]
)
def test_bad_datetime_is_rejected(text):
    with pytest.raises(ConfigError, match="--datetime"):
        parse_datetime_range(text)


def test_mgrs_ids_are_normalised_and_checked():
    assert parse_mgrs_tiles("T33UUP, 29upu") == ("33UUP", "29UPU")
    with pytest.raises(ConfigError, match="not an MGRS tile id"):
        parse_mgrs_tiles("33UUPX")


def test_geojson_aoi_gives_its_bounding_box(tmp_path):
    path = tmp_path / "aoi.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[13.71, 48.21], [13.73, 48.21], [13.73, 48.23], [13.71, 48.21]]],
                        },
                    }
                ],
            }
        )
    )
    assert bbox_from_geojson(path) == (13.71, 48.21, 13.73, 48.23)


def test_query_needs_exactly_one_area_and_a_valid_cloud_limit():
    with pytest.raises(ConfigError, match="exactly one of --bbox"):
        resolve_query(stac_url="http://x", collection="c", bbox=None, datetime_range="2017-06-01/2017-06-02")
    with pytest.raises(ConfigError, match="--max-cloud"):
        resolve_query(
            stac_url="http://x",
            collection="c",
            bbox="1,1,2,2",
            datetime_range="2017-06-01/2017-06-02",
            max_cloud=150,
        )
    with pytest.raises(ConfigError, match="not an http"):
        resolve_query(
            stac_url="localhost:8081", collection="c", bbox="1,1,2,2", datetime_range="2017-06-01/2017-06-02"
        )
