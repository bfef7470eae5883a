# Two commands on a fresh machine: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PIP_FLAGS := --disable-pip-version-check -q
PYTEST_ARGS ?=
# The suite runs in two pytest-xdist workers (one per core; much of it waits on chains, processes and browsers),
# each test file whole in one worker (--dist loadfile), each worker with its own test database.
PYTEST_WORKERS ?= 2

.PHONY: run test deps pydeps npmdeps sysdeps benchdeps lint check contracts clean-data bench docs-shots

deps: pydeps npmdeps contracts

# Re-installs only when a requirements file changed (stamp newer than both).
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip wheel
	$(PIP) install $(PIP_FLAGS) -r requirements-dev.txt
	@touch $@
pydeps: $(VENV)/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@
npmdeps: node_modules/.installed

# Debian's chromium for the browser tests (tests/browser): Playwright drives /usr/bin/chromium, it never
# downloads a browser (no `playwright install`). Installed with apt-get when missing.
# Debian's prometheus package for promtool: tests/unit/test_alert_rules.py checks and unit-tests
# docs/alerts/billing.rules.yml with it. Where apt-get cannot install it, those two tests skip and say why.
CHROMIUM := /usr/bin/chromium
sysdeps:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) || { echo "ERROR: $(CHROMIUM) is missing; the browser tests need it"; exit 1; }
	@command -v promtool >/dev/null || { \
	  echo "installing Debian prometheus (promtool) for the alert rule tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus >/dev/null; } || echo "WARNING: promtool could not be installed: the alert rule tests will skip"; }

contracts: npmdeps
	@node contracts/compile.js

run: deps
	$(PY) -m billing_project.devstack

test: deps sysdeps
	$(PY) -m ruff check .
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest --create-db -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: pydeps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Refresh the screenshots of docs/console.md from the browser tests.
docs-shots: deps sysdeps
	CONSOLE_DOCS_SHOTS=1 $(PY) -m pytest tests/browser -m browser -q

# Debian's wrk, the load client of the hot-path benches (bench/checkout.py, bench/webhook_ingest.py); installed
# with apt-get when missing, only for `make bench` (without it the benches fall back to a slower Python client).
WRK := /usr/bin/wrk
benchdeps:
	@test -x $(WRK) || { \
	  echo "installing Debian wrk for the benches"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

bench: deps benchdeps
	$(PY) bench/run_all.py --update-docs

clean-data:
	rm -rf .data
