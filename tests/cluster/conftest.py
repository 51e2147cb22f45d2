"""The two-node Ray cluster on loopback (head + worker) that the cluster tests share."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from infra.local._common import free_port
from pipeline.cluster.submit import submit_with_retry, wait_for_job


def _warm_up(url: str, budget_s: float = 120.0) -> None:
    """Wait until the head's job agent takes jobs (slow on a loaded machine): run `true` once."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(url)
    job = submit_with_retry(client, retry_s=budget_s, entrypoint="true")
    assert wait_for_job(client, job, timeout_s=budget_s, echo=False) == "SUCCEEDED"


@pytest.fixture(scope="session")
def two_node_cluster():
    """Head (with the dashboard/Jobs API) + one worker node, both on 127.0.0.1; stopped by PID."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    # The cluster's nodes find `python`/`difffusr` of this virtualenv first, as in the image.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from ray.cluster_utils import Cluster

    port = free_port()

    def node_args() -> dict:
        # Own ports for each node's agent: Ray's fixed default (52365) clashes with any other Ray on
        # the machine, and an agent that cannot bind leaves the head unable to take jobs.
        return {
            "object_store_memory": 96 * 2**20,
            "num_cpus": 1,
            "dashboard_agent_listen_port": free_port(),
            "metrics_export_port": free_port(),
        }

    c = Cluster(
        initialize_head=True,
        head_node_args={
            **node_args(),
            "include_dashboard": True,
            "dashboard_port": port,
            "resources": {"head": 1},
        },
    )
    try:
        c.add_node(**node_args(), resources={"worker": 1})
        c.wait_for_nodes()
        url = f"http://127.0.0.1:{port}"
        _warm_up(url)
        yield c, url
    finally:
        c.shutdown()  # kills only the processes this Cluster started
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
