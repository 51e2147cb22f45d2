"""A real STAC API on loopback: stac-fastapi-pgstac on a throwaway PostgreSQL/PostGIS cluster.

Context manager::

    from infra.local.stac_server import StacServer, StacServerConfig
    with StacServer(StacServerConfig(catalog=Path("data/samples/catalog"))) as server:
        print(server.url)  # http://127.0.0.1:PORT

CLI (``make demo``)::

    python -m infra.local.stac_server start --catalog data/samples/catalog --port 8081 --state-dir DIR
    python -m infra.local.stac_server stop --state-dir DIR

Steps: a fresh ``$TMPDIR/difffusr-pg-*`` cluster copied from a cached pgstac-migrated template (``initdb`` +
``pypgstac migrate`` the first time, as user ``postgres`` when run as root; see ``_pg_cluster.py``),
``postgres`` on a free loopback port (fsync off: the cluster is disposable), ``pypgstac`` upsert of the
catalog's collection and items with asset hrefs made absolute (``file://`` URIs, or ``--href-base`` such as
``s3://bucket/catalog``), then ``uvicorn stac_fastapi.pgstac.app:create_app``. PostGIS and the
``.venv-stac`` virtualenv come from ``infra/local/setup.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from infra.local._common import (
    ADDRESS_IN_USE,
    REPO_ROOT,
    SETUP_HINT,
    LocalServiceError,
    free_port,
    http_ok,
    log_tail,
    port_is_free,
    stop_pid,
)
from infra.local._pg_cluster import (
    POSTGIS_CONTROL,
    chown_to,
    new_pgdata,
    postgres_user,
    run_loader,
    start_postgres,
)

PG_BIN_DEFAULT = Path(os.environ.get("DIFFFUSR_PG_BIN", "/usr/lib/postgresql/15/bin"))
STATE_FILE = "server.json"
_OWNED = (
    "pgdata",
    "sock",
    "postgres.log",
    "uvicorn.log",
    "load.log",
    "collections.ndjson",
    "items.ndjson",
    STATE_FILE,
)


@dataclass(frozen=True, kw_only=True)
class StacServerConfig:
    """Where the catalog is and how to run the server.

    Attributes:
        catalog: folder with ``collection.json`` and ``<item>/<item>.json`` files (relative asset hrefs).
        port: HTTP port of the STAC API on ``host``; None picks a free one.
        host: interface to bind (loopback only by default).
        state_dir: folder for the cluster, logs and ``server.json``; None uses a temporary folder that is
            removed on stop.
        venv: virtualenv holding stac-fastapi-pgstac, pypgstac and uvicorn.
        pg_bin: PostgreSQL 15 server binaries (initdb, postgres, pg_isready).
        href_base: when set (e.g. ``s3://bucket/catalog``), asset hrefs become ``href_base/<path relative
            to catalog>`` instead of ``file://`` URIs.
        timeout_s: seconds to wait for each process to become ready.
    """

    catalog: Path
    port: int | None = None
    host: str = "127.0.0.1"
    state_dir: Path | None = None
    venv: Path = REPO_ROOT / ".venv-stac"
    pg_bin: Path = PG_BIN_DEFAULT
    href_base: str | None = None
    timeout_s: float = 60.0


def read_catalog(
    catalog: Path, href_base: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a catalog folder and make every asset href absolute.

    Args:
        catalog: folder with ``collection.json`` (or several ``*/collection.json``) and item JSON files.
        href_base: optional URL prefix replacing the catalog folder (``s3://bucket/prefix``).

    Returns:
        (collections, items) as JSON dicts; relative links are dropped (the API writes its own).
    """
    catalog = Path(catalog).resolve()
    if not (catalog / "collection.json").is_file():
        raise LocalServiceError(
            f"no collection.json in catalog folder {catalog}; pass --catalog data/samples/catalog"
        )
    collections, items = [], []
    for path in sorted(catalog.rglob("*.json")):
        doc = json.loads(path.read_text())
        if doc.get("type") == "Collection":
            collections.append(_absolute(doc, path, catalog, href_base))
        elif doc.get("type") == "Feature":
            items.append(_absolute(doc, path, catalog, href_base))
    if not items:
        raise LocalServiceError(f"no STAC items (*.json with type Feature) under {catalog}")
    return collections, items


def _absolute(doc: dict[str, Any], path: Path, catalog: Path, href_base: str | None) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    for asset in doc.get("assets", {}).values():
        href = asset["href"]
        if "://" in href or href.startswith("/"):
            continue
        target = (path.parent / href).resolve()
        if href_base:
            asset["href"] = href_base.rstrip("/") + "/" + target.relative_to(catalog).as_posix()
        else:
            asset["href"] = target.as_uri()
    doc["links"] = [ln for ln in doc.get("links", []) if "://" in ln.get("href", "")]
    return doc


class StacServer:
    """Start/stop PostgreSQL + stac-fastapi-pgstac; usable as a context manager returning itself."""

    def __init__(self, config: StacServerConfig) -> None:
        self.config = config
        self.url: str | None = None
        self.state_dir: Path | None = None
        self.startup_s: float | None = None
        self._owns_dir = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Start everything and load the catalog; returns the API URL. Cleans up on failure."""
        t0 = time.perf_counter()
        cfg = self.config
        check_prerequisites(cfg)
        collections, items = read_catalog(cfg.catalog, cfg.href_base)
        if cfg.port and not port_is_free(cfg.port, cfg.host):
            raise LocalServiceError(
                f"port {cfg.port} on {cfg.host} is in use; pick another --port or stop what uses it"
            )
        port = cfg.port or free_port(cfg.host)
        if cfg.state_dir is None:
            self.state_dir, self._owns_dir = Path(tempfile.mkdtemp(prefix="difffusr-stac-")), True
        else:
            self.state_dir = Path(cfg.state_dir).resolve()
            if (self.state_dir / STATE_FILE).exists():
                raise LocalServiceError(
                    f"a STAC server state already exists in {self.state_dir}; stop it first "
                    f"(python -m infra.local.stac_server stop --state-dir {self.state_dir})"
                )
            self.state_dir.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {"pids": {}, "owned_dir": self._owns_dir}
        try:
            self._run(cfg, port, collections, items, state)
        except BaseException:
            self._write_state(state)
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        state["startup_s"] = round(self.startup_s, 2)
        self._write_state(state)
        return self.url  # type: ignore[return-value]

    def _run(self, cfg: StacServerConfig, port: int, collections: list, items: list, state: dict) -> None:
        sd = self.state_dir
        assert sd is not None
        t0 = time.perf_counter()
        as_user = postgres_user()
        # The cluster lives in its own folder under the system temp dir: the state dir's parents may not be
        # traversable by the 'postgres' user (e.g. pytest's 0700 tmp_path), and socket paths must stay short.
        pg_root = Path(tempfile.mkdtemp(prefix="difffusr-pg-"))
        state["pg_root"] = str(pg_root)
        (pg_root / "sock").mkdir()
        for p in (pg_root, pg_root / "sock"):
            chown_to(p, as_user)
        phases = state.setdefault("phases_s", {})
        state["pgdata_from"] = new_pgdata(cfg.pg_bin, cfg.venv, pg_root / "pgdata", as_user)
        phases["pgdata"] = round(time.perf_counter() - t0, 2)
        pg_port = free_port("127.0.0.1")
        state["pg_port"] = pg_port
        pg = start_postgres(
            cfg.pg_bin, pg_root / "pgdata", pg_root / "sock", pg_port, sd / "postgres.log", as_user
        )
        state["pids"]["postgres"] = pg.pid
        phases["postgres"] = round(time.perf_counter() - t0, 2)
        env = dict(
            os.environ,
            PGUSER="postgres",
            PGPASSWORD="postgres",
            PGHOST="127.0.0.1",
            PGPORT=str(pg_port),
            PGDATABASE="postgres",
            DB_MIN_CONN_SIZE="1",
            DB_MAX_CONN_SIZE="4",
            STAC_FASTAPI_TITLE="difffusr local STAC API",
            STAC_FASTAPI_LANDING_ID="difffusr-local",
            STAC_FASTAPI_DESCRIPTION=f"Loopback STAC API serving {Path(cfg.catalog).resolve()}",
            STAC_FASTAPI_VERSION="1.0.0",
        )

        def launch_api(port: int) -> subprocess.Popen:
            with open(sd / "uvicorn.log", "ab") as log:
                api = subprocess.Popen(
                    [
                        str(cfg.venv / "bin" / "uvicorn"),
                        "--factory",
                        "stac_fastapi.pgstac.app:create_app",
                        "--host",
                        cfg.host,
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=sd,
                )
            state["pids"]["uvicorn"] = api.pid
            return api

        api = launch_api(port)  # imports while pgstac loads
        for name, docs in (("collections", collections), ("items", items)):
            (sd / f"{name}.ndjson").write_text("".join(json.dumps(d) + "\n" for d in docs))
        run_loader(cfg.venv, pg_port, sd / "collections.ndjson", sd / "items.ndjson", log=sd / "load.log")
        phases["pgstac_load"] = round(time.perf_counter() - t0, 2)
        want = {c["id"] for c in collections}
        # A port we picked ourselves can still be taken before uvicorn binds it: pick another and relaunch.
        attempts = 1 if cfg.port else 3
        for attempt in range(attempts):
            url = f"http://{cfg.host}:{port}"
            try:
                self._wait(
                    lambda u=url: (
                        http_ok(f"{u}/collections") and all(http_ok(f"{u}/collections/{c}") for c in want)
                    ),
                    api,
                    "stac-fastapi-pgstac",
                    sd / "uvicorn.log",
                )
                break
            except LocalServiceError as e:
                if attempt + 1 == attempts or ADDRESS_IN_USE not in str(e).lower():
                    raise
                port = free_port(cfg.host)
                api = launch_api(port)
        state["url"] = url
        phases["api"] = round(time.perf_counter() - t0, 2)
        self.url = url

    def _wait(self, ready: Any, proc: subprocess.Popen, what: str, log: Path) -> None:
        deadline = time.monotonic() + self.config.timeout_s
        while not ready():
            if proc.poll() is not None:
                raise LocalServiceError(
                    f"{what} exited with code {proc.returncode} during start-up; log {log}:\n{log_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise LocalServiceError(
                    f"{what} not ready after {self.config.timeout_s:.0f} s; log {log}:\n{log_tail(log)}"
                )
            time.sleep(0.1)

    def _write_state(self, state: dict[str, Any]) -> None:
        assert self.state_dir is not None
        state["state_dir"] = str(self.state_dir)
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=1))

    def stop(self) -> None:
        """Stop the API and PostgreSQL by PID and delete the throwaway cluster."""
        if self.state_dir is not None:
            stop_state_dir(self.state_dir)
            self.state_dir, self.url = None, None


def stop_state_dir(state_dir: Path) -> bool:
    """Stop the server recorded in ``state_dir/server.json``; returns False when there was none."""
    state_dir = Path(state_dir)
    path = state_dir / STATE_FILE
    if not path.exists():
        return False
    state = json.loads(path.read_text())
    pids = state.get("pids", {})
    if "uvicorn" in pids:
        stop_pid(int(pids["uvicorn"]), "uvicorn", signal.SIGTERM)
    if "postgres" in pids:  # SIGINT = PostgreSQL "fast" shutdown of the postmaster and its children
        stop_pid(int(pids["postgres"]), "postgres", signal.SIGINT)
    if state.get("pg_root"):
        shutil.rmtree(state["pg_root"], ignore_errors=True)
    if state.get("owned_dir"):
        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        for name in _OWNED:
            p = state_dir / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        try:
            state_dir.rmdir()  # only when empty
        except OSError:
            pass
    return True


def check_prerequisites(cfg: StacServerConfig) -> None:
    """Raise LocalServiceError naming what is missing (PostgreSQL 15, PostGIS 3, .venv-stac)."""
    for exe in ("initdb", "postgres", "pg_isready"):
        if not (cfg.pg_bin / exe).exists():
            raise LocalServiceError(
                f"PostgreSQL 15 server binary {cfg.pg_bin / exe} not found; {SETUP_HINT} "
                "(or set DIFFFUSR_PG_BIN)"
            )
    if cfg.pg_bin == PG_BIN_DEFAULT and not POSTGIS_CONTROL.exists():
        raise LocalServiceError(
            f"PostGIS for PostgreSQL 15 is not installed ({POSTGIS_CONTROL} missing); {SETUP_HINT}"
        )
    for exe in ("python", "uvicorn"):
        if not (cfg.venv / "bin" / exe).exists():
            raise LocalServiceError(f"STAC server virtualenv {cfg.venv} is missing {exe}; {SETUP_HINT}")


def main(argv: list[str] | None = None) -> int:
    """CLI: ``start`` (prints the URL, leaves the server running), ``stop``, ``status``."""
    ap = argparse.ArgumentParser(prog="python -m infra.local.stac_server", description="loopback STAC API")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="start PostgreSQL + stac-fastapi-pgstac and load a catalog")
    st.add_argument("--catalog", type=Path, default=REPO_ROOT / "data" / "samples" / "catalog")
    st.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    st.add_argument("--host", default="127.0.0.1")
    st.add_argument("--state-dir", type=Path, required=True)
    st.add_argument("--href-base", default=None, help="e.g. s3://bucket/catalog instead of file:// hrefs")
    st.add_argument("--timeout", type=float, default=60.0)
    for name in ("stop", "status"):
        sp = sub.add_parser(name)
        sp.add_argument("--state-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "start":
            server = StacServer(
                StacServerConfig(
                    catalog=args.catalog,
                    port=args.port,
                    host=args.host,
                    state_dir=args.state_dir,
                    href_base=args.href_base,
                    timeout_s=args.timeout,
                )
            )
            url = server.start()
            print(
                f"STAC API ready in {server.startup_s:.1f} s (stop: python -m infra.local.stac_server stop "
                f"--state-dir {args.state_dir})",
                file=sys.stderr,
            )
            print(url)
        elif args.cmd == "stop":
            if not stop_state_dir(args.state_dir):
                print(f"no STAC server recorded in {args.state_dir}", file=sys.stderr)
        else:
            path = args.state_dir / STATE_FILE
            if not path.exists():
                print(f"no STAC server recorded in {args.state_dir}", file=sys.stderr)
                return 1
            url = json.loads(path.read_text()).get("url", "")
            print(url)
            return 0 if url and http_ok(f"{url}/collections") else 1
    except LocalServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
