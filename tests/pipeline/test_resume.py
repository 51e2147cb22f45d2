"""Crash safety: a run whose driver or worker is SIGKILLed partway finishes on rerun (or by itself, for a
worker) with a mosaic bit-identical to a clean run, and the rerun skips what was already done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
import zarr

from pipeline.cli import main
from tests.conftest import DEMO_BBOX, DEMO_DATETIME, REPO

pytestmark = pytest.mark.timeout(900)


def _argv(stac_api: str, out: Path) -> list[str]:
    # Small tiles: many of them, so that a kill lands mid-run.
    return [
        "run",
        "--stac-url",
        stac_api,
        "--bbox",
        DEMO_BBOX,
        "--datetime",
        DEMO_DATETIME,
        "--method",
        "gs",
        "--out",
        str(out),
        "--tile-size",
        "24",
        "--halo",
        "6",
        "--batch-tiles",
        "1",
        "--workers",
        "1",
    ]


def _pixels(out: Path) -> np.ndarray:
    with rasterio.open(out / "mosaic.tif") as src:
        return src.read()


def _done(out: Path, stage: str) -> int:
    try:
        return int((zarr.open_array(str(out / "work.zarr"), path=f"done/{stage}", mode="r")[...] > 0).sum())
    except Exception:  # noqa: BLE001 -- the store is still being created
        return 0


@pytest.fixture(scope="module")
def clean_run(stac_api, ray_local, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main(_argv(stac_api, out) + ["--quiet"]) == 0
    return _pixels(out)


def test_rerun_after_driver_sigkill_resumes_and_matches_a_clean_run(stac_api, clean_run, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *_argv(stac_api, out), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 400
    while _done(out, "infer") < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; use more tiles"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
    proc.wait()
    assert not (out / "manifest.json").exists() and not (out / "mosaic.tif").exists()
    rerun = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *_argv(stac_api, out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "ingest: skipping" in rerun.stderr and "inference: skipping" in rerun.stderr
    np.testing.assert_array_equal(_pixels(out), clean_run)


def test_worker_sigkill_is_survived_and_output_matches_a_clean_run(stac_api, clean_run, tmp_path):
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.time() + 400
        while not killed and time.time() < deadline:
            if _done(out, "infer") >= 2:
                for p in psutil.process_iter(["cmdline"]):
                    if any("TileWorker" in part for part in (p.info["cmdline"] or [])):
                        p.send_signal(signal.SIGKILL)
                        killed.append(p.pid)
                        return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    assert main(_argv(stac_api, out) + ["--quiet"]) == 0
    killer.join(timeout=5)
    assert killed, "no inference worker was found to kill"
    np.testing.assert_array_equal(_pixels(out), clean_run)
