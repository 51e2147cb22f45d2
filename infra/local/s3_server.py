"""A real S3 endpoint on loopback (moto server in its own process) and a folder-upload helper.

Usage::

    from infra.local.s3_server import S3Server, upload_folder
    with S3Server() as s3:                      # s3.endpoint_url = "http://127.0.0.1:PORT"
        upload_folder("data/samples/catalog", "demo", "catalog", env=s3.env)
        with s3.patched_env():                  # os.environ += s3.env for GDAL/s3fs/odc-stac
            rasterio.open("s3://demo/catalog/<item>/B02.tif")

``s3.env`` is the set of variables that made s3fs, GDAL ``/vsis3`` and odc-stac agree on this machine
(GDAL wants ``AWS_S3_ENDPOINT`` as host:port without scheme, ``AWS_HTTPS=NO`` and path-style addressing).
CLI: ``python -m infra.local.s3_server start --state-dir DIR [--port N]`` / ``stop --state-dir DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from infra.local._common import (
    ADDRESS_IN_USE,
    LocalServiceError,
    free_port,
    http_ok,
    log_tail,
    port_is_free,
    stop_pid,
)

STATE_FILE = "s3_server.json"


def s3_env(endpoint_host: str, port: int) -> dict[str, str]:
    """Environment that points boto3/s3fs (``AWS_ENDPOINT_URL``) and GDAL (``AWS_S3_ENDPOINT``) at moto."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{endpoint_host}:{port}",
        "AWS_ENDPOINT_URL_S3": f"http://{endpoint_host}:{port}",
        "AWS_S3_ENDPOINT": f"{endpoint_host}:{port}",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


@dataclass(frozen=True, kw_only=True)
class S3ServerConfig:
    """How to run moto.

    Attributes:
        port: TCP port on ``host``; None picks a free one.
        host: interface to bind (loopback).
        log_path: moto's log file; None discards the log.
        timeout_s: seconds to wait for the endpoint to answer.
    """

    port: int | None = None
    host: str = "127.0.0.1"
    log_path: Path | None = None
    timeout_s: float = 30.0


class S3Server:
    """moto S3 server process; a context manager returning itself (``endpoint_url``, ``env``, ``pid``)."""

    def __init__(self, config: S3ServerConfig | None = None) -> None:
        self.config = config or S3ServerConfig()
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.startup_s: float | None = None
        self._tmp_log: Path | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Variables that make s3fs, boto3, GDAL /vsis3 and odc-stac use this endpoint."""
        assert self.port is not None, "server not started"
        return s3_env(self.config.host, self.port)

    @property
    def pid(self) -> int | None:
        """PID of the moto process (None before start)."""
        return self.proc.pid if self.proc else None

    def start(self) -> str:
        """Start moto and wait until it answers; returns the endpoint URL."""
        t0 = time.perf_counter()
        cfg = self.config
        # A port we picked ourselves can still be taken before moto binds it: pick another and retry.
        attempts = 1 if cfg.port else 3
        for attempt in range(attempts):
            self.port = cfg.port or free_port(cfg.host)
            try:
                self._launch_and_wait()
                break
            except LocalServiceError as e:
                if attempt + 1 == attempts or ADDRESS_IN_USE not in str(e).lower():
                    raise
        self.startup_s = time.perf_counter() - t0
        return self.endpoint_url

    def _launch_and_wait(self) -> None:
        cfg = self.config
        if not port_is_free(self.port, cfg.host):
            raise LocalServiceError(f"port {self.port} on {cfg.host}: {ADDRESS_IN_USE}; pick another port")
        if cfg.log_path:
            log_path = Path(cfg.log_path)
        else:  # a throwaway log, so that a failed start can say why (e.g. the port was taken)
            if self._tmp_log is not None:
                self._tmp_log.unlink(missing_ok=True)
            fd, name = tempfile.mkstemp(prefix="difffusr-moto-", suffix=".log")
            os.close(fd)
            log_path = self._tmp_log = Path(name)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", cfg.host, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(os.environ, MOTO_CALL_RESET_API="false"),
            )
        deadline = time.monotonic() + cfg.timeout_s
        while not http_ok(f"{self.endpoint_url}/moto-api/"):
            if self.proc.poll() is not None:
                tail = log_tail(log_path)
                self.proc = None
                raise LocalServiceError(
                    f"moto server exited during start-up (is moto[server] installed? "
                    f"pip install -e '.[test]'){': ' + tail if tail else ''}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise LocalServiceError(
                    f"moto server not ready on {self.endpoint_url} after {cfg.timeout_s:.0f} s"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the moto process by PID (all buckets are lost)."""
        if self.proc is not None:
            stop_pid(self.proc.pid, "moto.server", signal.SIGTERM)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
            self.proc = None
        if self._tmp_log is not None:
            self._tmp_log.unlink(missing_ok=True)
            self._tmp_log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def patched_env(self) -> Iterator[dict[str, str]]:
        """Temporarily add :attr:`env` to ``os.environ`` (restores the previous values on exit)."""
        with patched_environ(self.env) as env:
            yield env


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Set ``env`` in ``os.environ`` for the duration of the block, then restore the old values."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_client(env: dict[str, str]) -> Any:
    """A boto3 S3 client for the endpoint described by ``env`` (see :func:`s3_env`)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def upload_folder(local_dir: str | Path, bucket: str, prefix: str = "", *, env: dict[str, str]) -> list[str]:
    """Upload every file under ``local_dir`` to ``s3://bucket/prefix/<relative path>``.

    Creates the bucket if needed (names need >= 3 characters).

    Returns:
        the uploaded keys, sorted.
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise LocalServiceError(f"cannot upload {local_dir}: not a folder")
    if len(bucket) < 3:
        raise LocalServiceError(f"bucket name {bucket!r} is too short: S3 bucket names need 3-63 characters")
    client = s3_client(env)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    keys = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        key = "/".join(x for x in (prefix.strip("/"), path.relative_to(local_dir).as_posix()) if x)
        client.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> int:
    """CLI: ``start`` (prints ``export`` lines for the env, leaves moto running) and ``stop``."""
    ap = argparse.ArgumentParser(prog="python -m infra.local.s3_server", description="loopback S3 (moto)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start")
    st.add_argument("--port", type=int, default=None)
    st.add_argument("--state-dir", type=Path, required=True)
    sp = sub.add_parser("stop")
    sp.add_argument("--state-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    state = args.state_dir / STATE_FILE
    try:
        if args.cmd == "start":
            args.state_dir.mkdir(parents=True, exist_ok=True)
            if state.exists():
                raise LocalServiceError(f"an S3 server is recorded in {state}; stop it first")
            srv = S3Server(S3ServerConfig(port=args.port, log_path=args.state_dir / "moto.log"))
            srv.start()
            state.write_text(json.dumps({"pid": srv.pid, "endpoint_url": srv.endpoint_url, "env": srv.env}))
            srv.proc = None  # leave it running
            print("\n".join(f"export {k}={v}" for k, v in srv.env.items()))
        else:
            if state.exists():
                stop_pid(int(json.loads(state.read_text())["pid"]), "moto.server", signal.SIGTERM)
                state.unlink()
    except LocalServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
