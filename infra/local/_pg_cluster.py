"""Throwaway PostgreSQL clusters for the loopback STAC API, copied from a cached pgstac-migrated template.

``initdb`` + ``pypgstac migrate`` cost 1.5-4 s on a busy 2-core machine; a copy of an already migrated data
folder costs ~0.1 s. The template lives in ``$TMPDIR/difffusr-pgstac-template-<key>/pgdata`` where ``key``
hashes the PostgreSQL binaries' version, the PostGIS version and the pypgstac version, so any upgrade builds a
new one. It is built once (into a temporary folder, then renamed atomically) and never written to afterwards.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from infra.local._common import SETUP_HINT, LocalServiceError, free_port, log_tail

POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")
LOADER = Path(__file__).with_name("_pgstac_load.py")


def postgres_user() -> str | None:
    """'postgres' when running as root (initdb refuses root), else None (run as the current user)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise LocalServiceError(f"running as root but there is no 'postgres' user; {SETUP_HINT}") from None
    return "postgres"


def chown_to(path: Path, user: str | None) -> None:
    """Give ``path`` to ``user`` (no-op when None)."""
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def start_postgres(
    pg_bin: Path, pgdata: Path, sock: Path, port: int, log: Path, user: str | None
) -> subprocess.Popen:
    """Start ``postgres`` on 127.0.0.1:``port`` (fsync off: disposable) in its own session; wait until
    ready."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [
                str(pg_bin / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(port),
                "-k",
                str(sock),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=60",
            ],
            user=user,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=sock.parent,
        )
    deadline = time.monotonic() + 60
    while (
        subprocess.run(
            [str(pg_bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            check=False,
        ).returncode
        != 0
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            raise LocalServiceError(
                f"PostgreSQL did not start (exit {proc.poll()}); log {log}:\n{log_tail(log)}"
            )
        time.sleep(0.05)
    return proc


def run_loader(venv: Path, port: int, *ndjson: Path, log: Path) -> None:
    """Run ``_pgstac_load.py`` in the server venv: migrate, then upsert the given collections/items files."""
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    res = subprocess.run(
        [str(venv / "bin" / "python"), str(LOADER), dsn, *map(str, ndjson)],
        capture_output=True,
        text=True,
        check=False,
    )
    log.write_text(res.stdout + res.stderr)
    if res.returncode:
        last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
        raise LocalServiceError(f"pypgstac migrate/load failed (see {log}): {last}")


def _template_key(pg_bin: Path, venv: Path) -> str:
    pg_version = subprocess.run(
        [str(pg_bin / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    postgis = POSTGIS_CONTROL.read_text() if POSTGIS_CONTROL.exists() else ""
    pypgstac = sorted(p.name for p in venv.glob("lib/python*/site-packages/pypgstac-*.dist-info"))
    return hashlib.sha256(
        f"{pg_bin}|{pg_version}|{postgis}|{pypgstac}|{os.geteuid()}|wal1".encode()
    ).hexdigest()[:16]


def _build_template(pg_bin: Path, venv: Path, user: str | None, target: Path) -> None:
    build = Path(tempfile.mkdtemp(prefix="difffusr-pgstac-build-"))
    try:
        sock = build / "sock"
        sock.mkdir()
        for p in (build, sock):
            chown_to(p, user)
        init = subprocess.run(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(build / "pgdata"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
                "--wal-segsize=1",
            ],
            user=user,
            capture_output=True,
            text=True,
            check=False,
            cwd=build,
        )
        if init.returncode:
            raise LocalServiceError(f"initdb failed in {build}: {init.stderr.strip()[-500:]}")
        port = free_port()
        proc = start_postgres(pg_bin, build / "pgdata", sock, port, build / "postgres.log", user)
        try:
            run_loader(venv, port, log=build / "migrate.log")
        finally:
            proc.send_signal(signal.SIGINT)  # fast shutdown: leaves a clean, copyable data folder
            proc.wait(timeout=30)
        shutil.rmtree(sock)
        (build / "READY").write_text("pgstac-migrated PostgreSQL data folder template\n")
        try:
            os.rename(build, target)  # atomic; loses harmlessly to a concurrent builder
        except OSError:
            pass
    finally:
        shutil.rmtree(build, ignore_errors=True)


def new_pgdata(pg_bin: Path, venv: Path, pgdata: Path, user: str | None) -> str:
    """Create ``pgdata`` as a copy of the cached migrated template (building it first if needed).

    Returns:
        "template" when an existing template was copied, "built" when it had to be built first.
    """
    target = Path(tempfile.gettempdir()) / f"difffusr-pgstac-template-{_template_key(pg_bin, venv)}"
    how = "template"
    if not (target / "READY").exists():
        _build_template(pg_bin, venv, user, target)
        how = "built"
    res = subprocess.run(
        ["cp", "-a", str(target / "pgdata"), str(pgdata)], capture_output=True, text=True, check=False
    )
    if res.returncode:
        raise LocalServiceError(f"could not copy the PostgreSQL template {target}: {res.stderr.strip()}")
    return how
