"""`difffusr run --plan` with a ledger: a unit whose asset is permanently broken ends dead after
--max-attempts while the others finish; `plan status` reports it; a rerun skips it; --retry-dead tries it
again. Real loopback STAC API over a copy of the bundled catalog with one truncated GeoTIFF."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.cluster.ledger import Ledger
from pipeline.cluster.plan import WorkUnit, write_plan
from tests.conftest import CATALOG
from tests.plugins.plan_runs import kill_plan_run_when
from tests.plugins.services import serving_catalog

GOOD = "S2A_MSIL2A_20170613T101031_87_48"  # Austria, 33UUP
BROKEN = "S2A_MSIL2A_20170617T113321_36_85"  # Ireland, 29UPU: B05 cut to a third


@pytest.fixture(scope="module")
def catalog_with_a_broken_granule(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("catalog")
    shutil.copy(CATALOG / "collection.json", root / "collection.json")
    for name in (GOOD, BROKEN):
        shutil.copytree(CATALOG / name, root / name)
    data = (root / BROKEN / "B05.tif").read_bytes()
    (root / BROKEN / "B05.tif").write_bytes(data[: len(data) // 3])
    with serving_catalog(root) as url:
        yield url


def _unit(item: str, tile: str, epsg: int, dates: str) -> WorkUnit:
    w, s, e, n = json.loads((CATALOG / item / f"{item}.json").read_text())["bbox"]
    return WorkUnit(
        tile_id=tile,
        epsg=epsg,
        bbox=(w + 0.001, s + 0.001, e - 0.001, n - 0.001),
        datetime=dates,
        area_km2=1.0,
    )


def test_a_broken_unit_ends_dead_and_the_others_finish(
    catalog_with_a_broken_granule, ray_local, tmp_path, capsys
):
    units = [
        _unit(GOOD, "33UUP", 32633, "2017-06-01/2017-06-30"),
        _unit(BROKEN, "29UPU", 32629, "2017-06-01/2017-06-30"),
        _unit(GOOD, "33UUP", 32633, "2017-07-01/2017-07-31"),  # no granule in July: empty
    ]
    plan = tmp_path / "plan.json"
    write_plan(plan, units, {"rates": {"gpu_seconds_per_km2": 1.0}})
    root = tmp_path / "prod"
    argv = [
        "run",
        "--plan",
        str(plan),
        "--stac-url",
        catalog_with_a_broken_granule,
        "--method",
        "bicubic",
        "--out",
        str(root),
        "--quiet",
        "--tile-size",
        "48",
        "--halo",
        "6",
        "--max-attempts",
        "2",
        "--concurrent-units",
        "3",
    ]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "3 units: 0 already done, 1 completed, 1 without granules, 1 failed" in out
    assert "dead 29UPU/2017-06-01_2017-06-30 after 2 attempts" in out and "B05" in out
    recs = Ledger(str(root)).records()
    broken = recs["29UPU/2017-06-01_2017-06-30"]
    assert (broken.state, broken.attempts, broken.history) == (
        "dead",
        2,
        ["running", "failed", "running", "dead"],
    )
    done = recs["33UUP/2017-06-01_2017-06-30"]
    assert done.state == "done" and done.tiles > 0 and done.bytes > 0 and done.seconds > 0
    assert recs["33UUP/2017-07-01_2017-07-31"].state == "empty"

    assert main(["plan", "status", str(root), "--plan", str(plan), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["counts"] == {"pending": 0, "running": 0, "done": 1, "empty": 1, "failed": 0, "dead": 1}
    assert "B05" in st["dead"]["29UPU/2017-06-01_2017-06-30"] and st["units_per_hour"] > 0
    # a plan written without measured rates holds the default GPU rate: 1 s/km2 x the done unit's 1 km2
    assert st["finished_estimate_s"] == 1.0 and st["finished_actual_s"] > 0
    assert main(["plan", "status", str(root)]) == 0
    assert "dead 29UPU/2017-06-01_2017-06-30" in capsys.readouterr().out

    assert main(argv) == 1  # a rerun: the finished units are skipped, the dead one is left alone
    out = capsys.readouterr().out
    assert "2 already done, 0 completed, 0 without granules, 0 failed, 1 dead skipped" in out
    assert Ledger(str(root)).records()["29UPU/2017-06-01_2017-06-30"].attempts == 2

    retry = [a if a != "2" else "1" for a in argv] + ["--retry-dead"]  # one more attempt, then dead again
    assert main(retry) == 1
    broken = Ledger(str(root)).records()["29UPU/2017-06-01_2017-06-30"]
    assert broken.history[-3:] == ["pending", "running", "dead"] and broken.attempts == 1
    assert Path(root / "33UUP" / "2017-06-01_2017-06-30" / "mosaic.tif").exists()

    # the product: a STAC Collection over the done unit, valid against the STAC 1.1 core schemas (the copies
    # pystac ships: offline), its item linked both ways
    collection = json.loads((root / "collection.json").read_text())
    stac_validator(collection).validate(collection)
    assert [lk["href"] for lk in collection["links"] if lk["rel"] == "item"] == [
        "./33UUP/2017-06-01_2017-06-30/item.json"
    ]
    item = json.loads((root / "33UUP" / "2017-06-01_2017-06-30" / "item.json").read_text())
    stac_validator(item).validate(item)
    assert item["collection"] == collection["id"] == "difffusr-prod"
    assert {lk["rel"]: lk["href"] for lk in item["links"]}["collection"] == "../../collection.json"
    w, s, e, n = collection["extent"]["spatial"]["bbox"][0]
    assert (w, s, e, n) == tuple(item["bbox"])
    assert collection["extent"]["temporal"]["interval"][0][0] == item["properties"]["start_datetime"]

    # served by the same kind of STAC API the inputs came from (stac-fastapi-pgstac), and found by a search
    import pystac_client
    import rasterio

    with serving_catalog(root) as url:
        found = list(
            pystac_client.Client.open(url)
            .search(collections=["difffusr-prod"], bbox=item["bbox"], datetime="2017-06-10/2017-06-20")
            .items()
        )
    assert [i.id for i in found] == [item["id"]]
    with rasterio.open(found[0].assets["mosaic"].href) as src:  # its COG asset is the unit's COG
        assert src.count == 12 and src.res == (2.5, 2.5)


def stac_validator(doc: dict):
    """A jsonschema validator of `doc`'s STAC core schema (Item or Collection), from pystac's local copies."""
    from jsonschema import Draft7Validator
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource

    cache = get_local_schema_cache()
    registry = Registry().with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in cache.items()
    )
    kind = {"Feature": "item", "Collection": "collection"}[doc["type"]]
    uri = f"https://schemas.stacspec.org/v{doc['stac_version']}/{kind}-spec/json-schema/{kind}.json"
    return Draft7Validator(cache[uri], registry=registry)


def test_a_killed_plan_run_resumes_and_matches_an_uninterrupted_one(stac_api, ray_local, tmp_path):
    """SIGKILL the whole run (driver and its Ray cluster) once a unit is done; the rerun takes over the unit
    the dead driver left running, skips the finished one, and every unit's COG equals an uninterrupted run."""
    import os
    import subprocess
    import sys

    import numpy as np
    import rasterio

    from tests.conftest import REPO

    units = [
        _unit(GOOD, "33UUP", 32633, "2017-06-01/2017-06-30"),
        _unit("S2A_MSIL2A_20170617T113321_4_55", "29UPU", 32629, "2017-06-01/2017-06-30"),
        _unit("S2B_MSIL2A_20170924T93020_69_24", "35VPK", 32635, "2017-09-01/2017-09-30"),
    ]
    plan = tmp_path / "plan.json"
    write_plan(plan, units, {})

    def argv(root: Path) -> list[str]:
        return ["run", "--plan", str(plan), "--stac-url", stac_api, "--method", "gs", "--out", str(root),
                "--quiet", "--tile-size", "24", "--halo", "6", "--batch-tiles", "1",
                "--workers", "1"]  # fmt: skip

    clean = tmp_path / "clean"
    assert main(argv(clean)) == 0
    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pipeline.cli", *argv(root)]
    before = kill_plan_run_when(  # once one unit is done and the next one under way
        cmd,
        env,
        root,
        lambda records: {"done", "running"} <= {r.state for r in records.values()},
        timeout_s=600,
    )
    running = [k for k, r in before.items() if r.state == "running"]
    assert len(running) == 1, before  # the unit the dead driver was on
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert "3 units: 1 already done" in rerun.stdout
    after = Ledger(str(root)).records()
    assert after[running[0]].history == ["running", "running", "done"]  # taken over, not run twice at once
    assert all(r.state == "done" for r in after.values())
    for unit in units:
        with (
            rasterio.open(root / unit.key / "mosaic.tif") as a,
            rasterio.open(clean / unit.key / "mosaic.tif") as b,
        ):
            np.testing.assert_array_equal(a.read(), b.read())
