"""Scheduled production: create the RayJob of the latest complete date window (the CronJob's command).

``difffusr schedule --template rayjob.yaml --window month`` (its flags: ``pipeline.cli.cluster``) runs
in the CronJob ``difffusr-production`` of ``k8s/``. It picks the window deterministically from today's
date (UTC), so a retried or late CronJob run picks the same window, fills ``@WINDOW@`` (STAC datetime range,
e.g. ``2024-06-01/2024-06-30``) and ``@WINDOW_ID@`` (``20240601-20240630``) into the template and
creates the RayJob through the in-cluster Kubernetes API with the pod's service account. A RayJob of
the same name (the same window) already there is reported and left alone (exit 0).

Windows: ``month`` = the previous calendar month; ``<N>d`` = the last complete N-day window, windows
counted from 1970-01-01 (so consecutive runs tile time without gaps or overlaps).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from pipeline.errors import ConfigError

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_EPOCH = dt.date(1970, 1, 1)


def latest_window(today: dt.date, window: str) -> tuple[dt.date, dt.date]:
    """The latest complete window that ends before `today`: (first day, last day), inclusive."""
    if window == "month":
        last = today.replace(day=1) - dt.timedelta(days=1)
        return last.replace(day=1), last
    if m := re.fullmatch(r"([1-9][0-9]*)d", window):
        n = int(m.group(1))
        index = (today - _EPOCH).days // n - 1  # the window holding today is not complete yet
        start = _EPOCH + dt.timedelta(days=index * n)
        return start, start + dt.timedelta(days=n - 1)
    raise ConfigError(f"--window {window!r} is not 'month' or '<N>d' (e.g. '10d')")


def parse_today(today: str | None) -> dt.date:
    """The date `--today` names (YYYY-MM-DD), or today in UTC when it is None."""
    if today is None:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(today)
    except ValueError:
        raise ConfigError(f"--today {today!r} is not YYYY-MM-DD") from None


def read_template(path: str | Path) -> str:
    """The text of the RayJob template file; ConfigError if it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read --template {str(path)!r}: {exc.strerror or exc}") from None


def render(template: str, start: dt.date, end: dt.date) -> dict:
    """Fill a RayJob template's @WINDOW@ / @WINDOW_ID@ placeholders and parse it."""
    text = template.replace("@WINDOW_ID@", f"{start:%Y%m%d}-{end:%Y%m%d}")
    text = text.replace("@WINDOW@", f"{start.isoformat()}/{end.isoformat()}")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"the production template is not valid YAML ({reason})") from None
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or doc.get("kind") != "RayJob" or not meta.get("name"):
        raise ConfigError(
            "the production template is not a RayJob manifest with a metadata.name; "
            "check ConfigMap difffusr-production-template"
        )
    return doc


def create_rayjob(doc: dict) -> str:
    """POST the RayJob to the in-cluster API server; returns "created" or "exists".

    Raises:
        ConfigError: not inside a Kubernetes pod with a service account, the API server cannot be reached,
            or it refuses the RayJob.
    """
    if "KUBERNETES_SERVICE_HOST" not in os.environ or not (_SA_DIR / "token").is_file():
        raise ConfigError(
            f"not inside a Kubernetes pod (no KUBERNETES_SERVICE_HOST or no service account at {_SA_DIR}); "
            "run it from the CronJob, or add --dry-run to print the RayJob"
        )
    namespace = (_SA_DIR / "namespace").read_text().strip()
    doc.setdefault("metadata", {})["namespace"] = namespace
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    url = f"https://{host}:{port}/apis/ray.io/v1/namespaces/{namespace}/rayjobs"
    request = urllib.request.Request(
        url,
        data=json.dumps(doc).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {(_SA_DIR / 'token').read_text().strip()}",
            "Content-Type": "application/json",
        },
    )
    context = ssl.create_default_context(cafile=str(_SA_DIR / "ca.crt"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=30):
            return "created"
    except urllib.error.HTTPError as exc:
        if exc.code == 409:
            return "exists"
        raise ConfigError(
            f"the API server refused RayJob {doc['metadata']['name']!r}: HTTP {exc.code} {exc.read()[:300]!r}"
        ) from None
    except urllib.error.URLError as exc:
        raise ConfigError(f"cannot reach the Kubernetes API server at {host}:{port}: {exc.reason}") from None
