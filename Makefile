# difffusr: `make demo` runs the main job on the bundled real data; `make test` runs the test suite.
# Both set everything up first (idempotent): the .venv, PostgreSQL/PostGIS + the STAC server's .venv-stac.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= out/demo
DEMO_BBOX ?= 13.7127,48.2168,13.7292,48.2278
DEMO_DATETIME ?= 2017-06-01/2017-06-30
DEMO_METHOD ?= difffusr

# Ray on one machine: no auth token in $HOME, no usage stats, stay on loopback.
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: setup demo test test-slow lint clean

setup: $(VENV)/.installed
	@bash infra/local/setup.sh

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# Starts the bundled STAC API on loopback, runs one region/date job on a local Ray cluster, stops the server.
demo: setup
	@set -euo pipefail; state=$$(mktemp -d); \
	trap '$(BIN)/python -m infra.local.stac_server stop --state-dir "'$$state'" >/dev/null 2>&1 || true; rm -rf "'$$state'"' EXIT; \
	url=$$($(BIN)/python -m infra.local.stac_server start --catalog data/samples/catalog --state-dir "$$state" | tail -n 1); \
	echo "STAC API on $$url (bundled real Sentinel-2 L2A samples)"; \
	$(BIN)/difffusr search --stac-url "$$url" --bbox $(DEMO_BBOX) --datetime $(DEMO_DATETIME); \
	$(BIN)/difffusr run --stac-url "$$url" --bbox $(DEMO_BBOX) --datetime $(DEMO_DATETIME) \
	  --method $(DEMO_METHOD) --out $(DEMO_OUT) --overwrite

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m ruff check pipeline tests infra benchmarks
	$(BIN)/python -m ruff format --check pipeline tests infra benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf out .pytest_cache
