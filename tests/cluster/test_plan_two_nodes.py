"""A continental run in miniature on the two-node loopback Ray cluster: `difffusr run --plan` of 8 units over
the bundled real patches (each patch split into a west and an east unit that overlap by ~200 m), 3 units in
flight. It finishes with every unit done and a valid STAC Collection; a SIGKILL of the run's driver at half
time and a rerun give every unit's COG bit-identical to the uninterrupted run; and where two units overlap,
their pixels are bit-identical (the zone tile lattice plan units lie on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

from pipeline.cluster.ledger import Ledger
from pipeline.cluster.plan import WorkUnit, write_plan
from tests.conftest import CATALOG, REPO
from tests.pipeline.test_plan_ledger import stac_validator
from tests.plugins.plan_runs import kill_plan_run_when
from tests.plugins.rasters import read_overlap

#: (catalog item, MGRS square, EPSG, month) of the bundled patches.
PATCHES = [
    ("S2A_MSIL2A_20170613T101031_87_48", "33UUP", 32633, "2017-06-01/2017-06-30"),
    ("S2A_MSIL2A_20170617T113321_36_85", "29UPU", 32629, "2017-06-01/2017-06-30"),
    ("S2A_MSIL2A_20170617T113321_4_55", "29UPV", 32629, "2017-06-01/2017-06-30"),
    ("S2B_MSIL2A_20170924T93020_69_24", "35VPK", 32635, "2017-09-01/2017-09-30"),
]


def _units() -> list[tuple[WorkUnit, WorkUnit]]:
    """A west and an east unit per patch (tile ids `<square>w` / `<square>e`: stand-ins for two squares)."""
    pairs = []
    for item, square, epsg, dates in PATCHES:
        w, s, e, n = json.loads((CATALOG / item / f"{item}.json").read_text())["bbox"]
        w, s, e, n = w + 0.001, s + 0.001, e - 0.001, n - 0.001
        mid, half = (w + e) / 2, 0.0015  # ~100 m of longitude either side of the middle
        west = WorkUnit(
            tile_id=f"{square}w", epsg=epsg, bbox=(w, s, mid + half, n), datetime=dates, area_km2=0.7
        )
        east = WorkUnit(
            tile_id=f"{square}e", epsg=epsg, bbox=(mid - half, s, e, n), datetime=dates, area_km2=0.7
        )
        pairs.append((west, east))
    return pairs


def _plan_run(plan: Path, root: Path, stac_url: str, address: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "run", "--plan", str(plan), "--stac-url", stac_url,
            "--out", str(root), "--method", "gs", "--quiet", "--tile-size", "24", "--halo", "6",
            "--batch-tiles", "1", "--ray-address", address, "--concurrent-units", "3"]  # fmt: skip


def test_an_8_unit_plan_on_two_nodes_survives_a_kill_and_its_units_meet_seamlessly(
    two_node_cluster, stac_api, tmp_path
):
    cluster, _ = two_node_cluster
    pairs = _units()
    units = [u for pair in pairs for u in pair]
    plan = tmp_path / "plan.json"
    write_plan(plan, units, {})
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    clean = tmp_path / "clean"
    t0 = time.monotonic()
    done = subprocess.run(_plan_run(plan, clean, stac_api, cluster.address), env=env, capture_output=True,
                          text=True, timeout=900, check=False)  # fmt: skip
    clean_s = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert "8 units: 0 already done, 8 completed" in done.stdout
    assert all(r.state == "done" for r in Ledger(str(clean)).records().values())
    collection = json.loads((clean / "collection.json").read_text())
    stac_validator(collection).validate(collection)
    assert len([lk for lk in collection["links"] if lk["rel"] == "item"]) == 8

    # SIGKILL the run's driver once half of the units are done; the rerun finishes the rest.
    root = tmp_path / "killed"
    before = kill_plan_run_when(
        _plan_run(plan, root, stac_api, cluster.address),
        env,
        root,
        lambda records: sum(r.state == "done" for r in records.values()) >= 4,
        timeout_s=2 * clean_s + 120,
    )
    assert 4 <= sum(r.state == "done" for r in before.values()) < 8
    rerun = subprocess.run(_plan_run(plan, root, stac_api, cluster.address), env=env, capture_output=True,
                           text=True, timeout=900, check=False)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    after = Ledger(str(root)).records()
    assert all(r.state == "done" for r in after.values()), (
        {k: r.state for k, r in after.items()},
        rerun.stdout,
    )
    for unit in units:
        with (
            rasterio.open(root / unit.key / "mosaic.tif") as a,
            rasterio.open(clean / unit.key / "mosaic.tif") as b,
        ):
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=unit.key)

    # Adjacent units: the same pixels where they overlap.
    for west, east in pairs:
        pa, pb = read_overlap(clean / west.key / "mosaic.tif", clean / east.key / "mosaic.tif")
        both = (pa > 0) & (pb > 0)  # uint16: 0 = nodata
        assert both.sum() > 12 * 40 * 100, west.key  # >= ~100 m x 250 m of overlap with data in both
        np.testing.assert_array_equal(pa[both], pb[both], err_msg=f"{west.key} | {east.key}")
