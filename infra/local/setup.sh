#!/usr/bin/env bash
# Install what the loopback STAC API needs; idempotent, seconds when already done.
#   1. PostgreSQL 15 + PostGIS 3 from Debian (apt, as root), unless already installed.
#   2. .venv-stac/ in the repo: stac-fastapi-pgstac 7.2.0 + pypgstac 0.10.0 + uvicorn, pinned by
#      infra/local/requirements-stac.txt (its own venv: it pins cachetools etc. apart from .venv).
# Usage: bash infra/local/setup.sh        (env PYTHON=python3.11 to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/../.."
REQ=infra/local/requirements-stac.txt
VENV=.venv-stac
PYTHON=${PYTHON:-python3.11}

if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || [ ! -f /usr/share/postgresql/15/extension/postgis.control ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: PostgreSQL 15 / PostGIS 3 missing; run as root (or: sudo apt-get install -y --no-install-recommends postgresql-15-postgis-3)" >&2
    exit 2
  fi
  echo "setup.sh: installing PostgreSQL 15 + PostGIS 3 (apt)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15-postgis-3 >/dev/null
fi
if ! id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup.sh: no 'postgres' user after installing PostgreSQL" >&2; exit 2
fi

STAMP="$VENV/.requirements.sha256"
WANT=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -x "$VENV/bin/uvicorn" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "setup.sh: PostgreSQL 15 + PostGIS 3 and $VENV are ready"
  exit 0
fi
command -v "$PYTHON" >/dev/null || PYTHON=python3
echo "setup.sh: building $VENV with $($PYTHON --version)..."
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
LOG=$(mktemp)
if ! "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >"$LOG" 2>&1; then
  grep -v "^WARNING: Location" "$LOG" | tail -20 >&2; rm -f "$LOG"; exit 1
fi
rm -f "$LOG"
"$VENV/bin/python" -c "import stac_fastapi.pgstac.app, pypgstac.load, uvicorn" 2>/dev/null
echo "$WANT" > "$STAMP"
echo "setup.sh: PostgreSQL 15 + PostGIS 3 and $VENV are ready"
