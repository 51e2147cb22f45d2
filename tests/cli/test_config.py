"""The job config: light to import, every field validated at construction with a ConfigError naming its flag;
weights checked cheaply (JSON files and the safetensors header) against the kind the flag needs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.catalog.query import CatalogOptions
from pipeline.config import (
    ComputeConfig,
    JobConfig,
    MethodOptions,
    OutputConfig,
    PlanRunConfig,
    RunConfig,
    TilingConfig,
)
from pipeline.errors import CheckpointError, ConfigError
from pipeline.models.checkpoint import check_fusion_weights, check_sr_weights

REPO = Path(__file__).resolve().parents[2]
SR_WEIGHTS = REPO / "pipeline" / "weights" / "sr_small"
FUSION_WEIGHTS = REPO / "pipeline" / "weights" / "fusion_small"


def test_importing_the_config_pulls_in_no_heavy_library():
    code = (
        "import sys, pipeline.config; heavy = {'torch', 'rasterio', 'zarr', 'ray'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TilingConfig(core=100), "--tile-size 100 must be a positive multiple of 6"),
        (lambda: TilingConfig(core=0), "--tile-size 0 must be a positive multiple of 6"),
        (lambda: TilingConfig(halo=7), "--halo 7 must be a multiple of 6"),
        (lambda: TilingConfig(halo=-6), "--halo -6 must be a multiple of 6 10 m pixels, >= 0"),
        (lambda: TilingConfig(core=24, halo=18), "--halo 18 is more than half of --tile-size 24"),
        (lambda: MethodOptions(steps=0), "--steps 0 must be between 1 and 1000"),
        (lambda: MethodOptions(steps=1001), "--steps 1001 must be between 1 and 1000"),
        (lambda: MethodOptions(precision="fp8"), "--precision 'fp8' must be one of auto, fp32, bf16, fp16"),
        (lambda: MethodOptions(self_ensemble=3), "--self-ensemble 3 must be one of 1, 2, 4, 8"),
        (lambda: ComputeConfig(workers=0), "--workers 0 must be at least 1"),
        (lambda: ComputeConfig(batch_tiles=0), "--batch-tiles 0 must be at least 1"),
        (lambda: OutputConfig(out="x", dtype="int8"), "--dtype 'int8' must be one of uint16, float32"),
        (lambda: OutputConfig(out=""), "--out is required"),
        (
            lambda: JobConfig(output=OutputConfig(out="x"), method="lanczos"),
            "--method 'lanczos' is not one of",
        ),
        (lambda: JobConfig(output=OutputConfig(out="x"), seed=-1), "--seed -1 must be between 0 and"),
        (lambda: CatalogOptions(stac_url="localhost:8081"), "--stac-url 'localhost:8081' is not an http"),
        (lambda: CatalogOptions(max_items=0), "--max-items 0 must be at least 1"),
    ],
)
def test_every_bad_field_is_a_config_error_naming_its_flag(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


@pytest.mark.parametrize(
    ("crs", "message"),
    [("EPSG:4326", "not a projected CRS in metres"), ("EPSG:99999999", "not a CRS pyproj knows")],
)
def test_a_bad_output_crs_fails_at_construction(crs, message):
    query = CatalogOptions().query(
        (13.0, 48.0, 13.1, 48.1), datetime(2017, 6, 1, tzinfo=UTC), datetime(2017, 6, 30, tzinfo=UTC)
    )
    with pytest.raises(ConfigError, match=message):
        RunConfig(query=query, output=OutputConfig(out="x"), crs=crs)


def test_the_self_ensemble_changes_the_job_fingerprint_only_when_set():
    query = CatalogOptions().query(
        (13.0, 48.0, 13.1, 48.1), datetime(2017, 6, 1, tzinfo=UTC), datetime(2017, 6, 30, tzinfo=UTC)
    )

    def fingerprint(**model) -> str:
        cfg = RunConfig(query=query, output=OutputConfig(out="x"), model=MethodOptions(**model))
        return cfg.fingerprint(["item"])

    # unset: the weights' own setting, the fingerprint of jobs written before the option (resumable)
    assert fingerprint() == fingerprint(self_ensemble=None)
    assert len({fingerprint(), fingerprint(self_ensemble=1), fingerprint(self_ensemble=8)}) == 3


def test_the_defaults_are_the_documented_ones():
    assert (TilingConfig().core, TilingConfig().halo) == (96, 12)
    assert (
        MethodOptions().steps is None  # the SR weights' default_steps
        # bf16 where the device has it natively (within the rule's bounds of fp32), else fp32
        and MethodOptions().precision == "auto"
        and ComputeConfig().batch_tiles == 4
        and OutputConfig(out="x").dtype == "uint16"
    )


def test_a_plan_unit_is_the_plan_job_with_the_units_area_dates_output_and_crs():
    base = PlanRunConfig(
        catalog=CatalogOptions(stac_url="http://127.0.0.1:1/", max_cloud=20.0),
        output=OutputConfig(out="root", dtype="float32"),
        method="gs",
        seed=7,
    )
    start, end = datetime(2017, 6, 1, tzinfo=UTC), datetime(2017, 6, 30, 23, 59, 59, tzinfo=UTC)
    cfg = base.unit(bbox=(13.0, 48.0, 13.1, 48.1), start=start, end=end, out="root/33UVP/x", crs="EPSG:32633")
    assert cfg.query.stac_url == "http://127.0.0.1:1" and cfg.query.max_cloud == 20.0
    assert cfg.query.bbox == (13.0, 48.0, 13.1, 48.1) and (cfg.query.start, cfg.query.end) == (start, end)
    assert cfg.output.out == "root/33UVP/x" and cfg.output.dtype == "float32"
    assert (cfg.method, cfg.seed, cfg.crs) == ("gs", 7, "EPSG:32633")


# ----------------------------------------------------------------------------- weights
def test_the_shipped_weights_pass_their_checks():
    check_sr_weights(SR_WEIGHTS)
    check_fusion_weights(FUSION_WEIGHTS)


def test_missing_junk_or_wrong_kind_sr_weights_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="SR weights folder .* does not exist"):
        check_sr_weights(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not weights")
    with pytest.raises(CheckpointError, match="lacks model.safetensors, config.json, bands.json"):
        check_sr_weights(junk)
    with pytest.raises(CheckpointError, match="lacks model.safetensors"):
        check_sr_weights(FUSION_WEIGHTS)  # fusion weights are a folder per group
    bundle_as_sr = tmp_path / "fusion_as_sr"
    shutil.copytree(FUSION_WEIGHTS / "10m", bundle_as_sr)
    with pytest.raises(
        CheckpointError, match="holds a 'fusion' model, but a 'diffusion_sr' model was requested"
    ):
        check_sr_weights(bundle_as_sr)


def test_sr_weights_given_as_fusion_weights_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="holds a 'diffusion_sr' model, but a 'fusion_bundle' model"):
        check_fusion_weights(SR_WEIGHTS)
    with pytest.raises(CheckpointError, match="fusion weights folder .* does not exist"):
        check_fusion_weights(tmp_path / "missing")
    partial = tmp_path / "partial"
    shutil.copytree(FUSION_WEIGHTS, partial)
    shutil.rmtree(partial / "60m")
    with pytest.raises(CheckpointError, match="lacks the '60m' group checkpoint"):
        check_fusion_weights(partial)
    swapped = tmp_path / "swapped"
    shutil.copytree(FUSION_WEIGHTS, swapped)
    shutil.rmtree(swapped / "20m")
    shutil.copytree(FUSION_WEIGHTS / "10m", swapped / "20m")
    with pytest.raises(CheckpointError, match="is for group '10m', not '20m'"):
        check_fusion_weights(swapped)


@pytest.mark.parametrize("cut", [0, 4, 100])
def test_zero_byte_or_truncated_weights_file_is_refused(tmp_path, cut):
    weights = tmp_path / "sr"
    shutil.copytree(SR_WEIGHTS, weights)
    data = (weights / "model.safetensors").read_bytes()
    (weights / "model.safetensors").write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"is unreadable .*(not a safetensors file|truncated)"):
        check_sr_weights(weights)


def test_corrupt_config_json_is_refused(tmp_path):
    weights = tmp_path / "sr"
    shutil.copytree(SR_WEIGHTS, weights)
    (weights / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="is unreadable .*JSONDecodeError"):
        check_sr_weights(weights)
    (weights / "config.json").write_text(json.dumps(["a list"]))
    with pytest.raises(CheckpointError, match="not an object"):
        check_sr_weights(weights)
