"""`difffusr plan` then `difffusr run --plan`: every unit runs once, empty windows are recorded, reruns
skip, and plans of later windows into the same root (the scheduled CronJob) grow one collection."""

from __future__ import annotations

import json

from pipeline.cli import main
from pipeline.cluster.ledger import Ledger
from pipeline.cluster.plan import WorkUnit, write_plan
from tests.conftest import CATALOG, DEMO_BBOX


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
    # A driver killed after a unit's manifest was written but before the ledger heard leaves the unit
    # "running" in the ledger; the rerun finds the output finished and records it done, with what it wrote.
    ledger = Ledger(str(root))
    done_tiles = ledger.records()["33UVP/2017-06-01_2017-06-30"].tiles
    assert done_tiles > 0
    events = root / "_ledger" / "33UVP__2017-06-01_2017-06-30"
    for event in events.glob("*-done.json"):
        event.unlink()
    assert ledger.records()["33UVP/2017-06-01_2017-06-30"].state == "running"
    assert main(argv) == 0
    assert "2 units: 2 already done, 0 completed" in capsys.readouterr().out
    found = ledger.records()["33UVP/2017-06-01_2017-06-30"]
    assert (found.state, found.tiles) == ("done", done_tiles)
    assert ledger.records()["33UVP/2017-07-01_2017-07-31"].state == "empty"

    # A scheduled run of a later window into the same root (what the CronJob does each month): a new unit
    # runs, the collection grows to hold both windows' items, and a rerun of either plan changes nothing.
    item = "S2B_MSIL2A_20170924T93020_69_24"
    w, s, e, n = json.loads((CATALOG / item / f"{item}.json").read_text())["bbox"]
    september = tmp_path / "september.json"
    unit = WorkUnit(tile_id="35VPK", epsg=32635, bbox=(w + 0.001, s + 0.001, e - 0.001, n - 0.001),
                    datetime="2017-09-01/2017-09-30", area_km2=1.0)  # fmt: skip
    write_plan(september, [unit], {})
    later = [a if a != str(plan) else str(september) for a in argv]
    assert main(later) == 0
    assert "1 units: 0 already done, 1 completed" in capsys.readouterr().out
    links = [
        lk["href"]
        for lk in json.loads((root / "collection.json").read_text())["links"]
        if lk["rel"] == "item"
    ]
    assert links == ["./33UVP/2017-06-01_2017-06-30/item.json", "./35VPK/2017-09-01_2017-09-30/item.json"]
    before = (root / "collection.json").read_text()
    assert main(argv) == 0 and main(later) == 0
    assert "1 units: 1 already done, 0 completed" in capsys.readouterr().out
    assert json.loads((root / "collection.json").read_text())["links"] == json.loads(before)["links"]
