"""The one place that starts (or joins) Ray, and the one list of environment forwarded to Ray workers.

Used by `difffusr run` (its stage tasks and inference actors), `run --plan`, and `difffusr train` (Ray Train).
`difffusr submit` forwards the same variables to a submitted job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping

#: Environment variables forwarded to Ray workers and submitted jobs (credentials, endpoints, GDAL/VSI tuning,
#: Planetary Computer key); never written to outputs or logs.
FORWARDED_ENV_PREFIXES: tuple[str, ...] = ("AWS_", "GDAL_", "CPL_", "VSI_", "AZURE_", "GS_", "PC_SDK_")


#: Environment of the inference actors' processes (set before the interpreter starts, through Ray's
#: runtime_env; no secrets here). glibc's default allocator returns large activations to the kernel after each
#: forward pass and faults them in again on the next: a paper-size fusion net spent ~40 % of its time in page
#: faults (58 s per 512^2 tile vs 30 s with these settings, issue 12). Keep freed memory in the heap instead.
INFERENCE_WORKER_ENV: dict[str, str] = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2**40),
}


#: Environment of a light method's inference actor (bicubic, gs: array arithmetic, no network): a fixed mmap
#: threshold turns glibc's dynamic one off, so every large array is mapped and unmapped whole and the actor's
#: memory follows what is live (flat over 420 tiles, where trimming after each call still left the peak
#: growing with the number of calls; the page faults cost the actor ~0.08 s per tile, off the critical path).
LIGHT_ACTOR_ENV: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": str(128 * 2**10)}


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the kernel (glibc `malloc_trim`); call it between the tasks of a
    long-lived worker. glibc raises its mmap threshold each time a large array is freed, so later large arrays
    come from the heap, and freed heap pages stay resident: a worker's memory then ratchets up with the mix of
    array sizes it has met (issue 12: a bicubic actor grew by 40-90 MiB over 420 tiles, the ingest/mosaic
    task workers by ~130 MiB). Trimming once per task keeps reuse within a task (no page faults per array,
    which a fixed mmap threshold costs: +31 % wall at 420 tiles) and returns what the task freed.
    Returns False where the C library has no `malloc_trim` (not glibc). Not for the networks' actors, whose
    heap is kept on purpose (`INFERENCE_WORKER_ENV`)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


#: Retries of the object store and HTTP reads, set unless the user set them (forwarded to every worker, as all
#: AWS_/GDAL_ variables): GDAL's /vsis3 and /vsicurl retry 429/5xx answers and broken connections with a
#: doubling delay; botocore (s3fs, boto3) in "standard" mode retries 5xx, throttling and connection errors.
#: A store's transient faults then cost seconds, not a unit (tests/pipeline/test_transient_faults.py).
IO_RETRY_ENV: dict[str, str] = {
    "GDAL_HTTP_MAX_RETRY": "8",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "AWS_MAX_ATTEMPTS": "10",
    "AWS_RETRY_MODE": "standard",
}


def set_io_retry_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Put `IO_RETRY_ENV` into `environ` (default: this process's) where the user has not set them."""
    environ = os.environ if environ is None else environ
    for key, value in IO_RETRY_ENV.items():
        environ.setdefault(key, value)


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The forwarded variables of `environ` (default: this process's environment)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def start_ray(
    address: str | None,
    *,
    num_cpus: int | None = None,
    object_store_bytes: int | None = None,
    log_to_driver: bool = False,
    dashboard: bool = False,
) -> bool:
    """Join the Ray cluster at `address`, or start a new local one when it is None.

    Args:
        address: "auto", "ray://host:10001", a head address, or None for a new local cluster ("local": never
            attach silently to another cluster found on the machine).
        num_cpus, object_store_bytes: sizes of a new local cluster (ignored when joining one).
        log_to_driver: stream worker output to this process.
        dashboard: start the dashboard of a new local cluster (Ray Train polls its State API; without it Train
            logs repeated warnings).

    Returns:
        True when this call connected (the caller then shuts Ray down), False when Ray was already up.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict = {"log_to_driver": log_to_driver, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, include_dashboard=False, **kwargs)
    else:
        local: dict = {"num_cpus": num_cpus or os.cpu_count() or 2}
        if object_store_bytes:
            local["object_store_memory"] = object_store_bytes
        ray.init(address="local", include_dashboard=dashboard, **local, **kwargs)
    return True
