"""Scheduled production: create the RayJob of the latest complete date window (the CronJob's command).

``python -m pipeline.cluster.schedule --template rayjob.yaml --window month`` runs in the CronJob
``difffusr-production`` of ``k8s/``. It picks the window deterministically from today's date (UTC),
so a retried or late CronJob run picks the same window, fills ``@WINDOW@`` (STAC datetime range,
e.g. ``2024-06-01/2024-06-30``) and ``@WINDOW_ID@`` (``20240601-20240630``) into the template and
creates the RayJob through the in-cluster Kubernetes API with the pod's service account. A RayJob of
the same name (the same window) already there is reported and left alone (exit 0).

Windows: ``month`` = the previous calendar month; ``<N>d`` = the last complete N-day window, windows
counted from 1970-01-01 (so consecutive runs tile time without gaps or overlaps).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import ssl
import sys
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


def render(template: str, start: dt.date, end: dt.date) -> dict:
    """Fill a RayJob template's @WINDOW@ / @WINDOW_ID@ placeholders and parse it."""
    text = template.replace("@WINDOW_ID@", f"{start:%Y%m%d}-{end:%Y%m%d}")
    text = text.replace("@WINDOW@", f"{start.isoformat()}/{end.isoformat()}")
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or doc.get("kind") != "RayJob":
        raise ConfigError(
            "the production template is not a RayJob manifest; check ConfigMap difffusr-production-template"
        )
    return doc


def create_rayjob(doc: dict) -> str:
    """POST the RayJob to the in-cluster API server; returns "created" or "exists"."""
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
        )


def cli_main(argv: list[str]) -> int:
    """Entry point (`python -m pipeline.cluster.schedule`); returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m pipeline.cluster.schedule", description=__doc__.splitlines()[0]
    )
    p.add_argument("--template", required=True, help="RayJob template with @WINDOW@ / @WINDOW_ID@")
    p.add_argument("--window", default="month", help="month (previous calendar month) or <N>d")
    p.add_argument("--today", help="date to schedule from, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--dry-run", action="store_true", help="print the RayJob as JSON instead of creating it")
    args = p.parse_args(argv)
    try:
        today = dt.date.fromisoformat(args.today) if args.today else dt.datetime.now(dt.UTC).date()
    except ValueError as exc:
        raise ConfigError(f"--today {args.today!r} is not YYYY-MM-DD") from exc
    start, end = latest_window(today, args.window)
    doc = render(Path(args.template).read_text(), start, end)
    if args.dry_run:
        print(json.dumps(doc, indent=1))
        return 0
    outcome = create_rayjob(doc)
    name = doc["metadata"]["name"]
    print(
        f"RayJob {name} for {start}/{end}: "
        + ("created" if outcome == "created" else "already submitted, left alone")
    )
    return 0


if __name__ == "__main__":
    from pipeline.errors import DiffFuSRError

    try:
        raise SystemExit(cli_main(sys.argv[1:]))
    except DiffFuSRError as err:
        print(f"schedule: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
