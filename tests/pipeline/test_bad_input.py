"""Bad input: one line on stderr naming the bad value and the fix, exit 2, no traceback, nothing written."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

from infra.local._common import free_port
from pipeline.cli import main
from tests.conftest import CATALOG, DEMO_BBOX, DEMO_DATETIME
from tests.plugins.services import serving_catalog

REPO = Path(__file__).resolve().parents[2]
SR_WEIGHTS = REPO / "pipeline" / "weights" / "sr_small"
FUSION_WEIGHTS = REPO / "pipeline" / "weights" / "fusion_small"


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
    # the last --datetime wins: a month without granules
    code, err = _run(
        capsys, _run_argv(tmp_path / "out", "--datetime", "2020-01-01/2020-01-31", stac_url=stac_api)
    )
    assert code == 2 and len(err) == 1 and "widen --datetime" in err[0]
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_reported_before_any_work(stac_api, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = _run(capsys, _run_argv(blocker, stac_url=stac_api))
    assert code == 2 and len(err) == 1 and "is an existing file" in err[0]


def _dead_url() -> str:
    """A loopback URL nothing listens on: any search there fails with a connection error."""
    return f"http://127.0.0.1:{free_port()}"


def _run_argv(out: Path, *extra: str, stac_url: str | None = None) -> list[str]:
    return [
        "run",
        "--stac-url",
        stac_url or _dead_url(),
        "--bbox",
        DEMO_BBOX,
        "--datetime",
        DEMO_DATETIME,
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def test_bad_tile_size_fails_before_the_search_of_a_dead_stac_url(capsys, tmp_path):
    code, err = _run(capsys, _run_argv(tmp_path / "out", "--tile-size", "100"))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("difffusr: error: --tile-size 100 must be a positive multiple of 6")
    assert not (tmp_path / "out").exists()


def _junk_folder(tmp_path: Path) -> Path:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.bin").write_bytes(b"\0" * 64)
    return junk


@pytest.mark.parametrize(
    ("flag", "weights", "message"),
    [
        ("--sr-weights", "missing", "SR weights folder '{}' does not exist"),
        ("--sr-weights", "junk", "checkpoint folder '{}' lacks model.safetensors, config.json, bands.json"),
        ("--sr-weights", "fusion", "checkpoint folder '{}' lacks model.safetensors"),
        ("--fusion-weights", "missing", "fusion weights folder '{}' does not exist"),
        ("--fusion-weights", "junk", "fusion weights folder '{}' lacks the '10m' group checkpoint"),
        ("--fusion-weights", "sr", "holds a 'diffusion_sr' model, but a 'fusion_bundle' model was requested"),
    ],
)
def test_bad_weights_fail_on_the_driver_before_any_search(capsys, tmp_path, flag, weights, message):
    folder = {
        "missing": tmp_path / "nowhere",
        "junk": _junk_folder(tmp_path),
        "fusion": FUSION_WEIGHTS,
        "sr": SR_WEIGHTS,
    }[weights]
    code, err = _run(capsys, _run_argv(tmp_path / "out", flag, str(folder)))
    assert code == 2 and len(err) == 1, err
    assert message.format(folder) in err[0] and "STAC" not in err[0]
    assert not (tmp_path / "out").exists()
    # `superres` says the same for the same folder.
    code, sr_err = _run(
        capsys,
        [
            "superres",
            str(CATALOG / "S2A_MSIL2A_20170613T101031_87_48"),
            str(tmp_path / "sr.tif"),
            flag,
            str(folder),
        ],
    )
    assert code == 2 and sr_err == err
    assert not (tmp_path / "sr.tif").exists()


def test_run_plan_takes_no_area_and_refuses_one(capsys, tmp_path):
    code, err = _run(
        capsys,
        [
            "run",
            "--plan",
            str(tmp_path / "jobs.json"),
            "--bbox",
            DEMO_BBOX,
            "--out",
            str(tmp_path / "out"),
            "--stac-url",
            _dead_url(),
        ],
    )
    assert code == 2 and len(err) == 1 and "brings each unit's area, dates and CRS; drop --bbox" in err[0]
    code, err = _run(
        capsys,
        [
            "run",
            "--plan",
            str(tmp_path / "jobs.json"),
            "--out",
            str(tmp_path / "out"),
            "--stac-url",
            _dead_url(),
        ],
    )
    assert code == 2 and len(err) == 1 and "cannot read plan" in err[0]
    assert not (tmp_path / "out").exists()


def _difffusr(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_stac_retries_are_quiet_and_short_lines_with_verbose(tmp_path):
    """The real process's stderr (pytest's log capture does not hide it): no urllib3 WARNING reprs."""
    argv = _run_argv(tmp_path / "out", "--method", "gs")
    proc = _difffusr(*argv)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("difffusr: error: STAC search at 'http://127.0.0.1:")
    verbose = _difffusr("--verbose", *argv)
    lines = verbose.stderr.strip().splitlines()
    retries = [line for line in lines if "retrying" in line]
    assert (
        verbose.returncode == 2 and len(retries) == 4 and lines[-1].startswith("difffusr: error: STAC search")
    )
    assert all(
        len(line) < 160 and "Retry(total" not in line and "object at 0x" not in line for line in retries
    )
    assert "WARNING" not in verbose.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture()
def not_a_stac_api(tmp_path) -> Iterator[str]:
    """A loopback HTTP server that answers an HTML page at / and 404 elsewhere, as a wrong URL would."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body>Welcome to nginx!</body></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the test reads stderr: no access log there
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path", ["", "/api/v1"])
def test_a_url_that_is_not_a_stac_api_is_one_line(not_a_stac_api, capsys, tmp_path, path):
    code, err = _run(capsys, _run_argv(tmp_path / "out", "--method", "gs", stac_url=not_a_stac_api + path))
    assert code == 2 and len(err) == 1, err
    assert f"STAC search at '{not_a_stac_api}{path}'" in err[0] and "check --stac-url" in err[0]
    assert ("HTML page" if path else "not JSON") in err[0] and "<" not in err[0]
    assert not (tmp_path / "out").exists()
    code, err = _run(
        capsys,
        ["search", "--stac-url", not_a_stac_api + path, "--bbox", DEMO_BBOX, "--datetime", DEMO_DATETIME],
    )
    assert code == 2 and len(err) == 1 and "check --stac-url" in err[0]


def test_unreachable_stac_api_is_a_catalog_error(capsys, tmp_path):
    code, err = _run(
        capsys,
        [
            "run",
            "--stac-url",
            "http://127.0.0.1:9",
            "--bbox",
            DEMO_BBOX,
            "--datetime",
            DEMO_DATETIME,
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
    )
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
    with serving_catalog(root) as url:
        yield url


def _bbox_of(item_id: str) -> str:
    item = json.loads((CATALOG / item_id / f"{item_id}.json").read_text())
    w, s, e, n = item["bbox"]
    return f"{w + 0.001},{s + 0.001},{e - 0.001},{n - 0.001}"


def test_unreadable_asset_names_the_granule_and_asset(broken_catalog_api, ray_local, capsys, tmp_path):
    code, err = _run(
        capsys,
        [
            "run",
            "--stac-url",
            broken_catalog_api,
            "--bbox",
            _bbox_of("S2A_MSIL2A_20170617T113321_36_85"),
            "--datetime",
            "2017-06-01/2017-06-30",
            "--method",
            "gs",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
    )
    assert code == 2 and len(err) == 1, err
    assert (
        "S2A_MSIL2A_20170617T113321_36_85" in err[0]
        and "rededge1" in err[0]
        and "--skip-bad-assets" in err[0]
    )


def test_skip_bad_assets_leaves_the_granule_out_and_reports_it(
    broken_catalog_api, ray_local, capsys, tmp_path
):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--stac-url",
            broken_catalog_api,
            "--bbox",
            _bbox_of("S2A_MSIL2A_20170617T113321_36_85"),
            "--datetime",
            "2017-06-01/2017-06-30",
            "--method",
            "bicubic",
            "--out",
            str(out),
            "--quiet",
            "--skip-bad-assets",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "skipped S2A_MSIL2A_20170617T113321_36_85: cannot read item" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert "S2A_MSIL2A_20170617T113321_36_85" in manifest["skipped_granules"]
    assert (out / "mosaic.tif").exists()


def test_all_nodata_granule_fails_cleanly_and_leaves_nothing(broken_catalog_api, ray_local, capsys, tmp_path):
    out = tmp_path / "out"
    code, err = _run(
        capsys,
        [
            "run",
            "--stac-url",
            broken_catalog_api,
            "--bbox",
            _bbox_of("S2B_MSIL2A_20170924T93020_69_24"),
            "--datetime",
            "2017-09-01/2017-09-30",
            "--method",
            "gs",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert code == 2 and len(err) == 1 and "every pixel of the AOI is nodata or cloud" in err[0]
    assert not any(p.name in ("work.zarr", "mosaic.zarr", "mosaic.tif") for p in out.glob("*"))
