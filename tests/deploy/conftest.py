"""Shared helpers of the deployment tests: the rendered k8s/ manifests and the repository root."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def rendered() -> list[dict]:
    """Every object of `kubectl kustomize k8s/` (kubectl is preinstalled on the project's machines)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (not a PyPI package here): install it to render k8s/")
    out = subprocess.run([kubectl, "kustomize", str(REPO / "k8s")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]
