"""infra/cloud/: Terraform that parses, formats clean, resolves every reference, and agrees with k8s/.

`terraform validate` needs the AWS provider plugin, which cannot be downloaded here; references are
resolved by parsing the HCL instead (python-hcl2)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLOUD = REPO / "infra" / "cloud"


def _blocks() -> dict[str, list]:
    merged: dict[str, list] = {}
    for tf in sorted(CLOUD.glob("*.tf")):
        with tf.open() as f:
            for key, value in hcl2.load(f).items():
                merged.setdefault(key, []).extend(value)
    return merged


def _unquote(value):
    """python-hcl2 keeps string literals quoted: '"difffusr"' -> 'difffusr'."""
    return value.strip('"') if isinstance(value, str) else value


def _names(blocks: list) -> set[str]:
    return {k.strip('"') for b in blocks for k in b}


def test_terraform_fmt_is_clean():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed (not on PyPI): install it to check formatting")
    out = subprocess.run(
        [terraform, "fmt", "-check", "-diff", str(CLOUD)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout


def test_every_reference_resolves():
    b = _blocks()
    variables = _names(b["variable"])
    locals_ = {k for block in b.get("locals", []) for k in block if not k.startswith("__")}
    resources = {
        f"{t.strip(chr(34))}.{n.strip(chr(34))}"
        for block in b["resource"]
        for t, v in block.items()
        for n in v
    }
    data = {
        f"{t.strip(chr(34))}.{n.strip(chr(34))}" for block in b["data"] for t, v in block.items() for n in v
    }
    text = json.dumps({k: v for k, v in b.items() if k != "variable"})
    assert set(re.findall(r"\bvar\.(\w+)", text)) <= variables
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= locals_
    assert {f"{t}.{n}" for t, n in re.findall(r"\bdata\.(aws_\w+)\.(\w+)", text)} <= data
    refs = {f"{t}.{n}" for t, n in re.findall(r"(?<!data\.)(?<![\w.])(aws_\w+)\.(\w+)", text)}
    assert "aws_s3_bucket.output" in refs and refs <= resources, refs - resources
    # every variable is used and documented
    assert variables <= set(re.findall(r"\bvar\.(\w+)", text))
    assert all("description" in v for block in b["variable"] for v in block.values())


def test_cloud_resources_match_the_manifests():
    b = _blocks()
    defaults = {k.strip('"'): _unquote(v.get("default")) for block in b["variable"] for k, v in block.items()}
    kustomization = yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())
    assert defaults["namespace"] == kustomization["namespace"]
    accounts = [d for d in yaml.safe_load_all((REPO / "k8s" / "serviceaccounts.yaml").read_text()) if d]
    assert defaults["service_account"] in {
        d["metadata"]["name"] for d in accounts if d["kind"] == "ServiceAccount"
    }
    pools = {}
    for block in b["resource"]:
        for group in block.get('"aws_eks_node_group"', {}).values():
            labels = {_unquote(k): _unquote(v) for k, v in group["labels"].items()}
            pools[labels["difffusr.io/pool"]] = group
    assert set(pools) == {"cpu", "gpu"}
    assert pools["gpu"]["taint"][0]["key"].strip('"') == "nvidia.com/gpu"
    assert pools["gpu"]["scaling_config"][0]["min_size"] == 0  # scale to zero when no inference runs
    manifests = (REPO / "k8s" / "raycluster.yaml").read_text() + (
        REPO / "k8s" / "jobs" / "train" / "rayjob.yaml"
    ).read_text()
    assert set(re.findall(r"difffusr\.io/pool: (\w+)", manifests)) == {"cpu", "gpu"}
    env = (REPO / "k8s" / "config" / "difffusr.env").read_text()
    assert f"DIFFFUSR_OUT_ROOT=s3://{defaults['bucket_name']}" in env
