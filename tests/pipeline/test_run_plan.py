"""`difffusr plan` then `difffusr run --plan`: every unit runs once, empty windows are recorded, reruns
skip."""

from __future__ import annotations

import json

from pipeline.cli import main
from tests.conftest import DEMO_BBOX


def test_run_plan_runs_each_unit_and_a_rerun_skips_them(stac_api, ray_local, tmp_path, capsys):
    w, s, e, n = (float(v) for v in DEMO_BBOX.split(","))
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}))
    plan = tmp_path / "jobs.json"
    assert (
        main(
            [
                "plan",
                "--aoi",
                str(aoi),
                "--datetime",
                "2017-06-01/2017-07-31",
                "--window",
                "month",
                "--out",
                str(plan),
            ]
        )
        == 0
    )
    units = json.loads(plan.read_text())["units"]
    # The patch lies where S2 tiles 33UUP and 33UVP overlap; the plan's 100 km square is 33UVP.
    assert [u["key"] for u in units] == ["33UVP/2017-06-01_2017-06-30", "33UVP/2017-07-01_2017-07-31"]
    capsys.readouterr()
    root = tmp_path / "prod"
    argv = [
        "run",
        "--plan",
        str(plan),
        "--stac-url",
        stac_api,
        "--method",
        "bicubic",
        "--out",
        str(root),
        "--quiet",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 units: 0 already done, 1 completed, 1 without granules, 0 failed" in out
    assert (root / "33UVP" / "2017-06-01_2017-06-30" / "mosaic.tif").exists()
    empty = json.loads((root / "33UVP" / "2017-07-01_2017-07-31" / "manifest.json").read_text())
    assert empty["status"] == "empty"
    assert main(argv) == 0
    assert "2 units: 2 already done, 0 completed" in capsys.readouterr().out
