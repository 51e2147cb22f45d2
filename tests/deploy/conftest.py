"""Shared helpers of the deployment tests: the rendered k8s/ manifests and the repository root."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


#: The kustomizations of k8s/: the platform and the two one-off jobs.
KUSTOMIZATIONS = ("k8s", "k8s/jobs/mosaic", "k8s/jobs/train")


@pytest.fixture(scope="session")
def rendered() -> list[dict]:
    """Every object of `kubectl kustomize` over each kustomization (kubectl is preinstalled here)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (not a PyPI package here): install it to render k8s/")
    docs = []
    for folder in KUSTOMIZATIONS:
        out = subprocess.run(
            [kubectl, "kustomize", str(REPO / folder)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, f"{folder}: {out.stderr}"
        docs += [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    return docs
