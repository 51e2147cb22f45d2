"""The loopback STAC API (stac-fastapi-pgstac on PostgreSQL/PostGIS) really searches the bundled catalog."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pystac_client
import pytest

from infra.local._common import REPO_ROOT, LocalServiceError, pid_matches
from infra.local.stac_server import StacServer, StacServerConfig, read_catalog
from tests.plugins.services import SAMPLE_CATALOG, first_port_pick_taken

AUSTRIA = "S2A_MSIL2A_20170613T101031_87_48"
IRELAND = {"S2A_MSIL2A_20170617T113321_36_85", "S2A_MSIL2A_20170617T113321_4_55"}
FINLAND = "S2B_MSIL2A_20170924T93020_69_24"
ALL = {AUSTRIA, FINLAND} | IRELAND


def _post_search(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{url}/search", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def _ids(doc: dict) -> set[str]:
    return {f["id"] for f in doc["features"]}


def test_bbox_search(stac_api: str) -> None:
    assert _ids(_post_search(stac_api, {"bbox": [-8.0, 52.0, -6.0, 53.0], "limit": 50})) == IRELAND
    assert _ids(_post_search(stac_api, {"bbox": [13.70, 48.21, 13.74, 48.23]})) == {AUSTRIA}


def test_datetime_search(stac_api: str) -> None:
    doc = _post_search(
        stac_api, {"collections": ["sentinel-2-l2a"], "datetime": "2017-06-15T00:00:00Z/2017-06-30T00:00:00Z"}
    )
    assert _ids(doc) == IRELAND
    doc = _post_search(stac_api, {"datetime": "2017-09-24T00:00:00Z/.."})
    assert _ids(doc) == {FINLAND}


def test_query_cloud_cover_filter(stac_api: str) -> None:
    assert _ids(_post_search(stac_api, {"query": {"eo:cloud_cover": {"lte": 10}}, "limit": 50})) == ALL
    assert _ids(_post_search(stac_api, {"query": {"eo:cloud_cover": {"gt": 0}}})) == set()
    cql2 = {
        "filter-lang": "cql2-json",
        "filter": {"op": "=", "args": [{"property": "s2:mgrs_tile"}, "29UPU"]},
    }
    assert _ids(_post_search(stac_api, cql2)) == IRELAND


def test_empty_result(stac_api: str) -> None:
    assert _ids(_post_search(stac_api, {"bbox": [-12.0, 24.0, -11.0, 25.0]})) == set()
    assert _ids(_post_search(stac_api, {"datetime": "2020-01-01T00:00:00Z/2020-12-31T23:59:59Z"})) == set()


def test_pystac_client_items_have_absolute_existing_hrefs(stac_api: str) -> None:
    client = pystac_client.Client.open(stac_api)
    search = client.search(
        collections=["sentinel-2-l2a"],
        bbox=[-8.0, 52.0, -6.0, 53.0],
        datetime="2017-06-01/2017-06-30",
        query={"eo:cloud_cover": {"lt": 5}},
    )
    items = list(search.items())
    assert {it.id for it in items} == IRELAND
    for it in items:
        assert set(it.assets) >= {
            "coastal",
            "blue",
            "green",
            "red",
            "rededge1",
            "rededge2",
            "rededge3",
            "nir",
            "nir08",
            "nir09",
            "swir16",
            "swir22",
        }
        href = it.assets["nir08"].href
        assert href.startswith("file:///")
        assert Path(urlparse(href).path).is_file()
        assert it.assets["blue"].extra_fields["raster:bands"][0]["scale"] == 0.0001
        assert it.properties["s2:mgrs_tile"] == "29UPU"


def test_odc_stac_loads_served_item(stac_api: str) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    items = list(pystac_client.Client.open(stac_api).search(ids=[AUSTRIA]).items())
    ds = odc_stac.load(items, bands=["blue", "swir16"], resolution=10)
    assert ds.blue.shape == (1, 120, 120) and str(ds.blue.dtype) == "uint16"
    assert int(ds.blue.min()) == 43 and int(ds.blue.max()) == 2048  # the patch's real DN range


def test_read_catalog_href_base() -> None:
    collections, items = read_catalog(SAMPLE_CATALOG, href_base="s3://bucket/catalog")
    assert [c["id"] for c in collections] == ["sentinel-2-l2a"] and len(items) == 4
    assert items[0]["assets"]["blue"]["href"] == f"s3://bucket/catalog/{items[0]['id']}/B02.tif"


def test_missing_setup_names_the_fix(tmp_path: Path) -> None:
    server = StacServer(StacServerConfig(catalog=SAMPLE_CATALOG, venv=tmp_path / "no-venv"))
    with pytest.raises(LocalServiceError, match="make setup"):
        server.start()


def test_cli_start_stop(tmp_path: Path, stac_api: str) -> None:
    """The CLI used by `make demo` leaves a server running and stops it by PID."""
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "infra.local.stac_server"]
    out = subprocess.run(
        cmd + ["start", "--state-dir", str(state)],
        cwd=REPO_ROOT,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip().splitlines()[-1]
    pids = json.loads((state / "server.json").read_text())["pids"]
    try:
        assert _ids(_post_search(url, {"ids": [FINLAND]})) == {FINLAND}
    finally:
        stop = subprocess.run(
            cmd + ["stop", "--state-dir", str(state)],
            cwd=REPO_ROOT,
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
        )
    assert stop.returncode == 0, stop.stderr
    assert not pid_matches(pids["uvicorn"], "uvicorn") and not pid_matches(pids["postgres"], "postgres")
    assert not state.exists()


def test_port_taken_before_bind_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port picked for us but taken by someone else before uvicorn binds it (a race CI met) costs a
    retry."""
    import infra.local.stac_server as stac_server_module

    with (
        first_port_pick_taken(monkeypatch, stac_server_module) as taken,
        StacServer(StacServerConfig(catalog=SAMPLE_CATALOG)) as server,
    ):
        assert server.url is not None and urlparse(server.url).port != taken
        assert _ids(_post_search(server.url, {"ids": [FINLAND]})) == {FINLAND}


def test_free_port_avoids_the_ephemeral_range() -> None:
    from infra.local._common import _ephemeral_range, free_port

    lo, _ = _ephemeral_range()
    assert all(20000 <= free_port() < lo for _ in range(20))
