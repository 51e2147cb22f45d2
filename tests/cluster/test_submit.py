"""`difffusr submit/status/logs` against a real two-node Ray cluster on loopback (head + worker)."""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from pathlib import Path

import pytest

from infra.local._common import free_port
from pipeline import cli
from pipeline.cluster.submit import build_entrypoint, forwarded_env
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SECRET = "difffusr-test-secret-4f1c9e"  # a made-up credential value that must never be printed

# Runs on the cluster: one task pinned to the worker node, one on the head; each reports its node
# and a digest of the forwarded credential (the credential itself is never printed).
JOB_CODE = """
import hashlib, os, ray
ray.init()
@ray.remote(num_cpus=0)
def probe():
    key = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    return ray.get_runtime_context().get_node_id(), hashlib.sha256(key.encode()).hexdigest()[:16]
worker = ray.get(probe.options(resources={"worker": 0.5}).remote())
head = ray.get(probe.options(resources={"head": 0.5}).remote())
print("nodes", len({worker[0], head[0]}), "alive", sum(n["Alive"] for n in ray.nodes()))
print("digests", worker[1], head[1])
"""


def _job_id(out: str) -> str:
    return next(line.split()[2].rstrip(":") for line in out.splitlines() if line.startswith("submitted job"))


def test_submit_runs_a_job_on_both_nodes_with_forwarded_credentials(two_node_cluster, capsys, monkeypatch):
    c, url = two_node_cluster
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "difffusr-test-key-id")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    rc = cli.main(
        [
            "submit",
            "--address",
            url,
            "--wait",
            "--timeout",
            "300",
            "--raw",
            "--",
            sys.executable,
            "-c",
            JOB_CODE,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    digest = hashlib.sha256(SECRET.encode()).hexdigest()[:16]
    assert "nodes 2 alive 2" in out
    assert f"digests {digest} {digest}" in out  # the worker node's task saw the credential too
    assert "AWS_ACCESS_KEY_ID" in out and "AWS_SECRET_ACCESS_KEY" in out  # names are listed...
    assert SECRET not in out  # ...values never

    job = _job_id(out)
    monkeypatch.setenv("RAY_ADDRESS", url)  # status/logs take the address from the environment
    assert cli.main(["status", job]) == 0
    status_line = capsys.readouterr().out
    assert status_line.startswith(f"{job}: SUCCEEDED")
    assert cli.main(["logs", job]) == 0
    logs = capsys.readouterr().out
    assert f"digests {digest} {digest}" in logs and SECRET not in logs
    assert cli.main(["status"]) == 0
    assert job in capsys.readouterr().out
    leaks = [
        str(f)
        for f in Path(c.head_node.get_session_dir_path(), "logs").rglob("*")
        if f.is_file() and SECRET.encode() in f.read_bytes()
    ]
    assert leaks == []  # not in any Ray log of the cluster either


def test_difffusr_submit_plan_runs_in_the_uploaded_working_dir(
    two_node_cluster, capsys, tmp_path, monkeypatch
):
    _, url = two_node_cluster
    monkeypatch.setenv("RAY_ADDRESS", url)
    work = tmp_path / "src"
    shutil.copytree(REPO / "pipeline", work / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__).parent / "data" / "dublin_wicklow.geojson", work / "aoi.geojson")
    # Through the public CLI: `difffusr submit ... -- plan ...` runs `difffusr plan` on the cluster, in
    # the uploaded folder (the AOI path is relative to it).
    argv = ["submit", "--working-dir", str(work), "--no-forward-env", "--wait", "--timeout", "300"]
    argv += ["--", "plan", "--aoi", "aoi.geojson", "--datetime", "2024-06-01/2024-06-30"]
    rc = cli.main(argv)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "submitted job" in out and ": difffusr plan --aoi aoi.geojson" in out
    assert "forwarded env vars (values not shown): none" in out
    assert "2 work units = 2 MGRS tiles x 1 date windows" in out


def test_failed_job_reports_failed_and_exit_code_1(two_node_cluster, capsys):
    _, url = two_node_cluster
    rc = cli.main(
        ["submit", "--address", url, "--wait", "--raw", "--", sys.executable, "-c", "raise SystemExit(3)"]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "FAILED" in out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_user_errors_say_what_to_fix(monkeypatch, two_node_cluster, capsys):
    _, url = two_node_cluster
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cli.main(["status", "raysubmit_x"]) == 2
    assert "RAY_ADDRESS" in _one_error_line(capsys)
    assert cli.main(["status", "raysubmit_missing", "--address", url]) == 2
    assert "no job 'raysubmit_missing'" in _one_error_line(capsys)
    with pytest.raises(ConfigError, match="nothing to submit"):
        build_entrypoint(["--"], raw=False)
    with pytest.raises(ConfigError, match="--env 'NOEQUALS'"):
        forwarded_env({}, ["NOEQUALS"])
    start = time.monotonic()
    assert cli.main(["status", "x", "--address", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach the Ray Jobs API" in _one_error_line(capsys)
    assert time.monotonic() - start < 30


def test_submit_to_an_address_that_is_not_listening_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert (
        cli.main(
            [
                "submit",
                "--address",
                f"http://127.0.0.1:{free_port()}",
                "--no-forward-env",
                "--",
                "plan",
                "--help",
            ]
        )
        == 2
    )
    assert "cannot reach the Ray Jobs API" in _one_error_line(capsys)


def test_submit_without_a_command_or_with_a_missing_working_dir_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cli.main(["submit", "--address", "http://127.0.0.1:9", "--"]) == 2
    assert "nothing to submit" in _one_error_line(capsys)
    assert (
        cli.main(
            [
                "submit",
                "--address",
                "http://127.0.0.1:9",
                "--working-dir",
                str(tmp_path / "nope"),
                "--no-forward-env",
                "--",
                "plan",
                "--help",
            ]
        )
        == 2
    )
    assert "--working-dir" in _one_error_line(capsys)


def test_entrypoint_prefixes_difffusr_and_quotes_words():
    assert build_entrypoint(
        ["--", "run", "--bbox", "-6.3,53.3,-6.2,53.4", "--out", "s3://b/r 1"], raw=False
    ) == ("difffusr run --bbox -6.3,53.3,-6.2,53.4 --out 's3://b/r 1'")
    env = forwarded_env({"AWS_REGION": "eu-west-1", "HOME": "/root", "GDAL_HTTP_MAX_RETRY": "5"}, ["X=1=2"])
    assert env == {"AWS_REGION": "eu-west-1", "GDAL_HTTP_MAX_RETRY": "5", "X": "1=2"}


def test_aws_profile_is_resolved_and_local_paths_stay_behind(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[difffusr-test]\naws_access_key_id = AKIDDIFFFUSRTEST\naws_secret_access_key = made-up\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile difffusr-test]\nregion = eu-west-1\n")
    environ = {
        "AWS_PROFILE": "difffusr-test",
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config),
        "AWS_CA_BUNDLE": "/etc/ssl/certs/only-on-this-machine.pem",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    }
    # The cluster has neither the profile nor these files: the profile travels as what it resolves to.
    assert forwarded_env(environ, []) == {
        "AWS_ACCESS_KEY_ID": "AKIDDIFFFUSRTEST",
        "AWS_SECRET_ACCESS_KEY": "made-up",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    }
    with pytest.raises(ConfigError, match="AWS profile 'missing'"):
        forwarded_env({**environ, "AWS_PROFILE": "missing"}, [])
