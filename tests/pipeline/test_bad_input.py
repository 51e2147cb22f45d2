"""Bad input: one line on stderr naming the bad value and the fix, exit code 2, no traceback, nothing left behind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import rasterio

from infra.local.stac_server import StacServer, StacServerConfig
from pipeline.cli import main
from tests.conftest import CATALOG, DEMO_BBOX, DEMO_DATETIME


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--bbox", "13.73,48.21,13.71,48.23", "reversed or empty"),
        ("--bbox", "13.71,48.21,13.73", "four numbers"),
        ("--datetime", "2017-06-31/2017-07-01", "not an ISO date"),
        ("--datetime", "2017-07-01/2017-06-01", "ends before it starts"),
        ("--crs", "EPSG:4326", "not a projected CRS in metres"),
        ("--crs", "EPSG:99999999", "not a CRS pyproj knows"),
        ("--tile-size", "100", "multiple of 6"),
    ],
)
def test_bad_option_value_is_one_line_with_exit_2(stac_api, capsys, tmp_path, option, value, message):
    args = {"--bbox": DEMO_BBOX, "--datetime": DEMO_DATETIME, option: value}
    argv = ["run", "--stac-url", stac_api, "--out", str(tmp_path / "out"), "--method", "gs", "--quiet"]
    for k, v in args.items():
        argv += [k, v]
    code, err = _run(capsys, argv)
    assert code == 2
    assert len(err) == 1 and message in err[0] and value in err[0] or message in err[0]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()


def test_empty_search_says_how_to_widen_and_writes_nothing(stac_api, capsys, tmp_path):
    code, err = _run(capsys, ["run", "--stac-url", stac_api, "--bbox", DEMO_BBOX, "--datetime", "2020-01-01/2020-01-31",
                              "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and len(err) == 1 and "widen --datetime" in err[0]
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_reported_before_any_work(stac_api, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = _run(capsys, ["run", "--stac-url", stac_api, "--bbox", DEMO_BBOX, "--datetime", DEMO_DATETIME,
                              "--out", str(blocker), "--quiet"])
    assert code == 2 and len(err) == 1 and "is an existing file" in err[0]


def test_unreachable_stac_api_is_a_catalog_error(capsys, tmp_path):
    code, err = _run(capsys, ["run", "--stac-url", "http://127.0.0.1:9", "--bbox", DEMO_BBOX, "--datetime",
                              DEMO_DATETIME, "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and len(err) == 1 and "STAC search at 'http://127.0.0.1:9'" in err[0]


@pytest.fixture(scope="module")
def broken_catalog_api(tmp_path_factory) -> Iterator[str]:
    """A second real STAC API whose two granules are broken the way real ones break:
    Ireland 36_85 with a truncated B05 file, and Finland 69_24 with every pixel nodata (DN 0)."""
    root = tmp_path_factory.mktemp("broken_catalog")
    shutil.copy(CATALOG / "collection.json", root / "collection.json")
    truncated = "S2A_MSIL2A_20170617T113321_36_85"
    empty = "S2B_MSIL2A_20170924T93020_69_24"
    for name in (truncated, empty):
        shutil.copytree(CATALOG / name, root / name)
    # An intact twin of the truncated granule (same pixels, another id), as when a product is reprocessed.
    twin = f"{truncated}_twin"
    shutil.copytree(CATALOG / truncated, root / twin)
    doc = json.loads((root / twin / f"{truncated}.json").read_text())
    (root / twin / f"{truncated}.json").unlink()
    doc["id"] = twin
    (root / twin / f"{twin}.json").write_text(json.dumps(doc))
    data = (root / truncated / "B05.tif").read_bytes()
    (root / truncated / "B05.tif").write_bytes(data[: len(data) // 3])
    for tif in (root / empty).glob("B*.tif"):
        with rasterio.open(tif) as src:
            profile = src.profile
        with rasterio.open(tif, "w", **{**profile, "driver": "GTiff", "nodata": 0}) as dst:
            dst.write(np.zeros((profile["count"], profile["height"], profile["width"]), profile["dtype"]))
    server = StacServer(StacServerConfig(catalog=root))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _bbox_of(item_id: str) -> str:
    item = json.loads((CATALOG / item_id / f"{item_id}.json").read_text())
    w, s, e, n = item["bbox"]
    return f"{w + 0.001},{s + 0.001},{e - 0.001},{n - 0.001}"


def test_unreadable_asset_names_the_granule_and_asset(broken_catalog_api, ray_local, capsys, tmp_path):
    code, err = _run(capsys, ["run", "--stac-url", broken_catalog_api, "--bbox", _bbox_of("S2A_MSIL2A_20170617T113321_36_85"),
                              "--datetime", "2017-06-01/2017-06-30", "--method", "gs", "--out", str(tmp_path / "out"),
                              "--quiet"])
    assert code == 2 and len(err) == 1, err
    assert "S2A_MSIL2A_20170617T113321_36_85" in err[0] and "rededge1" in err[0] and "--skip-bad-assets" in err[0]


def test_skip_bad_assets_leaves_the_granule_out_and_reports_it(broken_catalog_api, ray_local, capsys, tmp_path):
    out = tmp_path / "out"
    code = main(["run", "--stac-url", broken_catalog_api, "--bbox", _bbox_of("S2A_MSIL2A_20170617T113321_36_85"),
                 "--datetime", "2017-06-01/2017-06-30", "--method", "bicubic", "--out", str(out), "--quiet",
                 "--skip-bad-assets"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "skipped S2A_MSIL2A_20170617T113321_36_85: cannot read item" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert "S2A_MSIL2A_20170617T113321_36_85" in manifest["skipped_granules"]
    assert (out / "mosaic.tif").exists()


def test_all_nodata_granule_fails_cleanly_and_leaves_nothing(broken_catalog_api, ray_local, capsys, tmp_path):
    out = tmp_path / "out"
    code, err = _run(capsys, ["run", "--stac-url", broken_catalog_api, "--bbox", _bbox_of("S2B_MSIL2A_20170924T93020_69_24"),
                              "--datetime", "2017-09-01/2017-09-30", "--method", "gs", "--out", str(out), "--quiet"])
    assert code == 2 and len(err) == 1 and "every pixel of the AOI is nodata or cloud" in err[0]
    assert not any(p.name in ("work.zarr", "mosaic.zarr", "mosaic.tif") for p in out.glob("*"))
