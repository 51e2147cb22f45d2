"""An output folder on local disk or any fsspec URL, with atomic small-file writes.

Local files are written under a temporary name and renamed; remote objects (S3) are uploaded whole, which
is atomic per object. So a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import fsspec

from pipeline.errors import OutputError

#: Part size and parts in flight of a multipart upload to S3 (see `OutputDir._upload_options`).
UPLOAD_PART_MB = 8
UPLOAD_CONCURRENCY = 4
#: S3's limit on the parts of one multipart upload.
S3_MAX_PARTS = 10_000


class OutputDir:
    """The folder given as `--out` (a local path or e.g. s3://bucket/prefix)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol

    def join(self, name: str) -> str:
        """URL (or local path) of an entry."""
        return f"{self.url}/{name}"

    def check_writable(self) -> None:
        """Fail early, before any work, if the folder cannot be created or written."""
        if self.is_local:
            path = Path(self.root)
            if path.exists() and not path.is_dir():
                raise OutputError(
                    f"--out {self.url!r} is an existing file, not a folder; choose a folder path"
                )
            probe = path
            while not probe.exists():
                probe = probe.parent
            if not os.access(probe, os.W_OK):
                raise OutputError(
                    f"--out {self.url!r} is not writable (no write permission on '{probe}'); "
                    "choose another folder"
                )
            return
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(f"{self.root}/.write-test", b"ok")
            self.fs.rm_file(f"{self.root}/.write-test")
        except Exception as exc:  # noqa: BLE001 -- any fsspec backend error means "not writable"
            raise OutputError(
                f"--out {self.url!r} is not writable ({type(exc).__name__}: {exc}); "
                "check the bucket and credentials"
            ) from None

    def makedirs(self) -> None:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create --out {self.url!r}: {exc}") from None

    def exists(self, name: str) -> bool:
        return self.fs.exists(f"{self.root}/{name}")

    def read_json(self, name: str) -> Any:
        with self.fs.open(f"{self.root}/{name}", "r") as f:
            return json.load(f)

    def write_bytes(self, name: str, data: bytes) -> None:
        if self.is_local:
            target = Path(self.root) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(f"{self.root}/{name}", data)

    def write_json(self, name: str, doc: Any) -> None:
        self.write_bytes(name, json.dumps(doc, indent=2, default=str).encode())

    def local_staging(self) -> str:
        """A local folder where large files are built before `publish` (inside --out when it is local)."""
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            return tempfile.mkdtemp(dir=self.root, prefix=".staging-")
        return tempfile.mkdtemp(prefix="difffusr-staging-")

    def publish(self, local_file: str | Path, name: str) -> None:
        """Move a finished local file into place atomically."""
        if self.is_local:
            os.replace(local_file, Path(self.root) / name)
        else:
            options = self._upload_options(os.path.getsize(local_file))
            self.fs.put_file(str(local_file), f"{self.root}/{name}", **options)
            os.remove(local_file)

    def _upload_options(self, size: int) -> dict[str, int]:
        """s3fs uploads a large file in 50 MiB parts, 10 at once: 500 MiB of buffers in the process that
        publishes a granule's COG (issue 12: a stitch task grew from 545 to 885 MiB between a 25- and a
        110-tile job). Parts of `UPLOAD_PART_MB`, `UPLOAD_CONCURRENCY` at once bound that: uploading the
        420-tile COG (747 MiB) to moto grew the process by 95 MiB with 16 MiB x 4, 57 with 8 x 4, 39 with
        8 x 2, in the same time on loopback. Parts grow past S3's 10,000-part limit for files over 80 GB."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if not {"s3", "s3a"} & set(protocols):
            return {}
        part = max(UPLOAD_PART_MB * 2**20, -(-size // S3_MAX_PARTS))
        return {"chunksize": part, "max_concurrency": UPLOAD_CONCURRENCY}

    def remove(self, name: str) -> None:
        path = f"{self.root}/{name}"
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
