"""Shared test setup: real loopback services (tests/plugins/services.py), a local Ray cluster, sample
paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

pytest_plugins = ["tests.plugins.services"]

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
CATALOG = SAMPLES / "catalog"
HELDOUT = SAMPLES / "heldout"
STAC_ITEMS = SAMPLES / "stac_items"
#: The demo patch: BigEarthNet S2A_MSIL2A_20170613T101031_87_48 (Austria, 2017-06-13), 1.2 x 1.2 km.
DEMO_BBOX = "13.7127,48.2168,13.7292,48.2278"
DEMO_DATETIME = "2017-06-01/2017-06-30"


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A local Ray cluster shared by the tests of a session (2 CPUs, small object store)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 2**20,
            log_to_driver=False,
        )
    yield
    ray.shutdown()
