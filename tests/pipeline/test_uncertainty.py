"""`--uncertainty K`: K seeded draws per tile, their mean as the product and their spread as a second layer;
per-tile quality figures; provenance. Real bundled data (held-out windows, the demo patch on the loopback
STAC API), the shipped small weights, a local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from PIL import Image

from pipeline.bands import S2_BANDS
from pipeline.cli import main
from pipeline.inference.methods import MethodOptions, get_method
from pipeline.inference.predict import draw_seed, predict_tiles, predict_tiles_full
from pipeline.io.work_store import QUALITY_COLUMNS
from pipeline.models.fusion import load_fusion_model
from pipeline.models.precision import resolve_precision
from tests.conftest import DEMO_DATETIME, HELDOUT, REPO
from tests.inference.test_batching import windows

pytestmark = pytest.mark.timeout(1200)

#: A quarter of the demo patch (600 m x 600 m): 9 tiles of a 24 px core, enough for a kill to land mid-run.
SMALL_BBOX = "13.7127,48.2168,13.7210,48.2223"
CORE = (6, 30, 6, 30)  # the core of a 36 px window with a 6 px halo


@pytest.fixture(scope="module")
def learned():
    return get_method("difffusr", MethodOptions(steps=2))


def test_draws_are_batch_invariant_and_seeded_by_tile_and_draw(learned):
    b10, b20, b60 = windows(36, n=4)  # batch 4 (8 samples) vs batch 1 (2 samples) vs chunks of 3
    seeds = [100, 101, 102, 103]
    whole = predict_tiles_full(learned, b10, b20, b60, seeds=seeds, draws=2, cores=[CORE] * 4)
    assert whole.spread is not None and whole.quality is not None
    assert np.isfinite(whole.spread).all() and (whole.spread > 0).mean() > 0.5
    one = [
        predict_tiles_full(learned, *(g[i : i + 1] for g in (b10, b20, b60)), seeds=seeds[i : i + 1], draws=2)
        for i in range(4)
    ]
    split = predict_tiles_full(learned, b10, b20, b60, seeds=seeds, draws=2, max_batch=3)
    for other in (np.concatenate([o.product for o in one]), split.product):
        assert np.array_equal(other, whole.product)
    for other in (np.concatenate([o.spread for o in one]), split.spread):
        assert np.array_equal(other, whole.spread)
    # draw k of a tile is the plain prediction with draw_seed(tile seed, k); draw 0 is the tile's own seed
    pair = predict_tiles(
        learned, *(np.stack([g[0]] * 2) for g in (b10, b20, b60)), seeds=[100, draw_seed(100, 1)]
    )
    mean = (pair.astype(np.float64).sum(axis=0) / 2).astype(np.float32)
    assert np.array_equal(mean, whole.product[0])
    assert draw_seed(100, 0) == 100 and draw_seed(100, 1) not in (100, 101, draw_seed(101, 1))


def test_quality_figures_measure_consistency_with_the_measured_bands():
    b10, b20, b60 = windows(60, n=1)
    gs = get_method("gs")
    core = [(6, 54, 6, 54)]
    good = predict_tiles_full(gs, b10, b20, b60, seeds=[0], cores=core).quality[0]
    q = dict(zip(QUALITY_COLUMNS, good))
    assert all(0 < q[f"l1_{g}"] < 0.01 for g in ("10m", "20m", "60m")), q
    assert q["nodata_share"] == 0 and np.isnan(q["spread_mean"])
    # the same prediction checked against brighter "measurements": the L1 grows by about the offset
    bright = predict_tiles_full(gs, b10, b20, b60, seeds=[0]).product[0]
    from pipeline.inference.quality import tile_quality

    worse = dict(
        zip(QUALITY_COLUMNS, tile_quality(bright, (b10[0] + 0.02, b20[0] + 0.02, b60[0] + 0.02), core[0]))
    )
    assert worse["l1_10m"] > q["l1_10m"] + 0.015
    # nodata: a measured 10 m block missing -> a share of the core's outputs is nodata
    holed = b10.copy()
    holed[0, :, 6:30, 6:30] = np.nan
    qh = dict(zip(QUALITY_COLUMNS, predict_tiles_full(gs, holed, b20, b60, seeds=[0], cores=core).quality[0]))
    assert 0.05 < qh["nodata_share"] < 0.5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "gs", "--uncertainty", "4"], "--uncertainty 4 needs --method difffusr"),
        (["--uncertainty", "-1"], "--uncertainty -1 must be between 2 and 64"),
    ],
)
def test_bad_uncertainty_is_one_line_before_any_work(extra, message, tmp_path, capsys):
    scene = HELDOUT / "S2A_MSIL2A_20170617T113321_4_55"
    assert main(["superres", str(scene), str(tmp_path / "o.tif"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.iterdir())


def test_uncertainty_one_is_off():
    assert MethodOptions(uncertainty=1).uncertainty == 0


def test_shipped_weights_paths_agree_with_the_loaders():
    from pipeline.models.diffusion.model import DEFAULT_WEIGHTS
    from pipeline.mosaic.provenance import DEFAULT_FUSION_WEIGHTS, DEFAULT_SR_WEIGHTS

    assert DEFAULT_SR_WEIGHTS == DEFAULT_WEIGHTS and DEFAULT_FUSION_WEIGHTS.is_dir()


# ------------------------------------------------------------------------------------ difffusr run end to end
def _argv(stac_api: str, out: Path, batch: int) -> list[str]:
    return [
        "run",
        "--stac-url",
        stac_api,
        "--bbox",
        SMALL_BBOX,
        "--datetime",
        DEMO_DATETIME,
        "--out",
        str(out),
        "--uncertainty",
        "2",
        "--steps",
        "2",
        "--tile-size",
        "24",
        "--halo",
        "6",
        "--batch-tiles",
        str(batch),
        "--workers",
        "1",
        "--quiet",
    ]


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {
            "transform": src.transform,
            "crs": src.crs,
            "shape": (src.height, src.width),
            "dtype": src.dtypes[0],
            "nodata": src.nodata,
        }


@pytest.fixture(scope="module")
def clean_run(stac_api, ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unc") / "out"
    assert main(_argv(stac_api, out, batch=4)) == 0
    return out


def test_run_writes_the_uncertainty_layer_on_the_mosaic_grid(clean_run):
    out = clean_run
    unc, meta = _read(out / "uncertainty.tif")
    prod, pmeta = _read(out / "mosaic.tif")
    assert meta["transform"] == pmeta["transform"] and meta["crs"] == pmeta["crs"]
    assert meta["shape"] == pmeta["shape"] and unc.shape[0] == 12 and meta["dtype"] == "float32"
    assert np.array_equal(np.isnan(unc), prod == 0), "nodata of the spread exactly where the product has none"
    assert np.nanmean(unc) > 0
    ds = xr.open_zarr(out / "mosaic.zarr")
    np.testing.assert_array_equal(ds["uncertainty"].values, unc)
    assert ds["uncertainty"].attrs["band_names"] == list(S2_BANDS)


def test_run_reports_per_tile_quality_and_provenance(clean_run):
    out = clean_run
    with Image.open(out / "quality.png") as im:
        assert im.mode == "RGB" and np.asarray(im).std() > 5
    manifest = json.loads((out / "manifest.json").read_text())
    quality = manifest["quality"]
    assert quality["columns"] == ["row", "col", *QUALITY_COLUMNS]
    layout = manifest["layout"]
    assert len(quality["tiles"]) == layout["rows"] * layout["cols"] - manifest["tiles_empty"]
    first = dict(zip(quality["columns"], quality["tiles"][0]))
    assert 0 < first["l1_10m"] < 0.05 and first["spread_mean"] > 0
    assert quality["summary"]["l1_10m"]["tiles"] == len(quality["tiles"])
    item = json.loads((out / "item.json").read_text())
    props = item["properties"]
    assert props["difffusr:l1_10m_mean"] == quality["summary"]["l1_10m"]["mean"]
    assert props["difffusr:sampler"] == {"name": "DDIM", "eta": 0.0, "steps": 2, "draws": 2}
    # the precision the run resolved "auto" to on this machine, not the flag's name
    assert props["difffusr:precision"] == resolve_precision("auto", "cpu") and props["difffusr:seed"] == 0
    # no --self-ensemble: the fusion weights' own setting, as the actors loaded it
    shipped = {name: cfg.self_ensemble for name, cfg in load_fusion_model().configs.items()}
    assert props["difffusr:fusion_self_ensemble"] == shipped == manifest["stream"]["self_ensemble"]
    assert len(props["difffusr:weights"]["sr"]["sha256"]) == 64
    assert props["difffusr:inputs"][0]["processing_baseline"] == "02.05"
    assert props["difffusr:code"]["difffusr"]
    assert item["assets"]["uncertainty"]["href"] == "./uncertainty.tif"
    assert item["assets"]["quality"]["href"] == "./quality.png"
    assert manifest["stream"]["uncertainty_draws"] == 2


def _done(out: Path, stage: str) -> int:
    try:
        return int((zarr.open_array(str(out / "work.zarr"), path=f"done/{stage}", mode="r")[...] > 0).sum())
    except Exception:  # noqa: BLE001 -- the store is still being created
        return 0


def test_rerun_after_a_kill_reproduces_the_uncertainty_layer_bit_identically(stac_api, clean_run, tmp_path):
    """Killed mid-inference and rerun at another batch size (1, the clean run's is 4): the same pixels.

    (Before Gram-Schmidt's statistics were computed per image, batch 1 and 4 differed in 39.5 % of the
    uncertainty values: `baselines.gram_schmidt`.)"""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pipeline.cli", *_argv(stac_api, out, batch=4)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.time() + 600
    while _done(out, "infer") < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; use more tiles"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "uncertainty.tif").exists()
    rerun_cmd = [sys.executable, "-m", "pipeline.cli", *_argv(stac_api, out, batch=1)]
    rerun = subprocess.run(rerun_cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert "inference: skipping" in rerun.stderr
    for name in ("uncertainty.tif", "mosaic.tif"):
        np.testing.assert_array_equal(_read(out / name)[0], _read(clean_run / name)[0])
