"""pytest plugin: real loopback services for the tests (enable with
``pytest_plugins = ["tests.plugins.services"]``).

Session fixtures (each starts its own server process(es) and stops them by PID at session end):

- ``stac_api`` -> str: URL of a stac-fastapi-pgstac server (PostgreSQL/PostGIS) with
  ``data/samples/catalog`` loaded as collection ``sentinel-2-l2a``; asset hrefs are absolute ``file://`` URIs.
- ``stac_server`` -> :class:`infra.local.stac_server.StacServer` behind ``stac_api``
  (``.url``, ``.startup_s``).
- ``s3_server`` -> :class:`infra.local.s3_server.S3Server`: ``.endpoint_url``, ``.env`` (dict for s3fs/GDAL/
  odc-stac), ``.patched_env()``; upload with
  ``infra.local.s3_server.upload_folder(dir, bucket, prefix, env=...)``.

- ``stac_api_s3`` -> str: a second STAC API whose items point at ``s3://difffusr-samples/catalog/...`` on
  ``s3_server`` (the bundled catalog uploaded there); read its assets inside ``s3_env``.

Function fixture:

- ``s3_env`` -> dict: ``s3_server.env`` applied to ``os.environ`` for one test (monkeypatch, undone after).

Needs ``make setup`` (PostgreSQL 15 + PostGIS 3 and ``.venv-stac``); if missing, the fixture fails with the
command to run.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from infra.local._common import REPO_ROOT, LocalServiceError, free_port
from infra.local.s3_server import S3Server, upload_folder
from infra.local.stac_server import StacServer, StacServerConfig

SAMPLE_CATALOG: Path = REPO_ROOT / "data" / "samples" / "catalog"
S3_CATALOG_URL = "s3://difffusr-samples/catalog"


@pytest.fixture(scope="session")
def stac_server() -> Iterator[StacServer]:
    """A running loopback STAC API serving ``data/samples/catalog`` (stopped at session end)."""
    server = StacServer(StacServerConfig(catalog=SAMPLE_CATALOG))
    try:
        server.start()
    except LocalServiceError as e:
        pytest.fail(f"could not start the local STAC API: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stac_api(stac_server: StacServer) -> str:
    """URL (``http://127.0.0.1:PORT``) of the loopback STAC API with the bundled catalog."""
    assert stac_server.url is not None
    return stac_server.url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A running moto S3 server on loopback (stopped by PID at session end)."""
    server = S3Server()
    try:
        server.start()
    except LocalServiceError as e:
        pytest.fail(f"could not start the local S3 server: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``s3_server.env`` set in ``os.environ`` for the duration of one test."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return dict(s3_server.env)


@pytest.fixture(scope="session")
def stac_api_s3(s3_server: S3Server) -> Iterator[str]:
    """URL of a loopback STAC API whose asset hrefs are ``s3://difffusr-samples/catalog/<item>/<band>.tif``."""
    upload_folder(SAMPLE_CATALOG, "difffusr-samples", "catalog", env=s3_server.env)
    server = StacServer(StacServerConfig(catalog=SAMPLE_CATALOG, href_base=S3_CATALOG_URL))
    try:
        server.start()
    except LocalServiceError as e:
        pytest.fail(f"could not start the local STAC API (S3 hrefs): {e}", pytrace=False)
    try:
        assert server.url is not None
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def serving_catalog(folder: Path) -> Iterator[str]:
    """A loopback STAC API over a catalog folder (collection.json + <item>/<item>.json); yields its URL."""
    server = StacServer(StacServerConfig(catalog=folder))
    server.start()
    try:
        assert server.url is not None
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def first_port_pick_taken(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> Iterator[int]:
    """Make ``module.free_port`` first return a port that something already listens on; yields that port.

    Reproduces the race where a port picked as free is taken before the server binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        monkeypatch.setattr(
            module, "free_port", lambda host="127.0.0.1": next(picks, None) or free_port(host)
        )
        yield taken
