# The front door: make demo | install | test | lint | format | bench | chaos | clean.
# Everything runs from a local .venv; installs rerun only when pyproject.toml changes.
# The command is .venv/bin/syncworker; `. .venv/bin/activate` puts it on the PATH.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
LINT_PATHS := src tests bench
EXTRAS := test,postgres,redis,amqp,http,api,algolia,kits
# The suite runs in 3 processes (pytest-xdist): most tests wait on services and subprocesses,
# so 3 keep 2 cores busy (505 s against 1,013 s in one process, 2026-12-03). Each test has
# its own database, key prefix, queue names and ports, so they do not meet.
TEST_WORKERS ?= 3

# Stamps live inside the venv, so deleting the venv also forgets what was installed.
BASE_STAMP := $(VENV)/.installed-base
ALL_STAMP := $(VENV)/.installed-all
DEV_STAMP := $(VENV)/.installed-dev
USE_HINT := echo "syncworker is installed in .venv: run .venv/bin/syncworker, or first '. .venv/bin/activate' to type syncworker"

.PHONY: help demo install test lint format bench chaos services clean distclean

help:
	@echo "make demo      run 'syncworker demo' (no services needed)"
	@echo "make install   install syncworker with every connector (what the examples need)"
	@echo "make test      start services, lint, run the whole test suite"
	@echo "make lint      ruff check, ruff format --check, mypy"
	@echo "make format    ruff format and ruff check --fix"
	@echo "make bench     run the benchmarks (bench/run_all.py)"
	@echo "make chaos     long crash-recovery runs (SIGKILL crash tests, 10 kills each; the 1M-row pg_table acceptance run; the 200k-record Zoho -> Redis one; the 1M-message clean-up run)"
	@echo "make clean     remove caches and build output (distclean: also .venv)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "syncworker needs Python >= 3.11; set PYTHON=python3.x" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(BASE_STAMP): pyproject.toml $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(ALL_STAMP): pyproject.toml $(BIN)/python
	$(PIP) install -e '.[all]'
	@touch $@

$(DEV_STAMP): pyproject.toml $(BIN)/python
	$(PIP) install -e '.[$(EXTRAS)]'
	@touch $@

demo: $(BASE_STAMP)
	$(BIN)/syncworker demo
	@$(USE_HINT)

install: $(ALL_STAMP)
	@$(USE_HINT)

services:
	bash scripts/ensure-services.sh
	bash scripts/ensure-chromium.sh

test: $(DEV_STAMP) services
	@$(MAKE) --no-print-directory lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

lint: $(DEV_STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

bench: $(DEV_STAMP)
	$(BIN)/python bench/run_all.py

chaos: $(DEV_STAMP) services
	SYNCWORKER_CHAOS_ROUNDS=10 $(BIN)/pytest -q tests/e2e/test_crash.py tests/integration/test_seed000_e2e.py
	SYNCWORKER_ACCEPTANCE_ROWS=1000000 $(BIN)/pytest -q -s tests/integration/test_pg_table_acceptance.py
	SYNCWORKER_CLEANUP_MESSAGES=1000000 $(BIN)/pytest -q -s tests/integration/test_cleanup_kit.py -k exact_counts
	SYNCWORKER_ZOHO_ROWS=200000 $(BIN)/pytest -q -s tests/integration/test_zoho_redis_scale.py
	SYNCWORKER_CHAOS_ROUNDS=20 SYNCWORKER_JOBS_KILL_JOBS=10000 $(BIN)/pytest -q -s tests/integration/test_jobs_kill.py

# Keeps .venv: rebuilding it means reinstalling every extra.
clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
	find src tests bench -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
