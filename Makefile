# The two set-up commands of the README: `make demo` and `make test`.
# Both work on a fresh clone with only the package registries reachable.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
PORT ?= 3000
# Debian packages the integration tests drive (browser, PACS, fonts).
SYSTEM_PACKAGES := orthanc orthanc-dicomweb chromium postgresql-client haproxy

.PHONY: demo test lint typecheck pytest perf system-deps requirements bento clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip setuptools wheel
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[train,dev]'
	touch $(STAMP)

## demo: install, build the demo models from synthetic data, serve on 127.0.0.1:$(PORT)
demo: $(STAMP)
	$(BIN)/tonle demo --port $(PORT)

## test: install everything the suite needs, then lint, type-check and run every test
test: $(STAMP) system-deps lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# Load and timing thresholds (throughput, latency percentiles, memory drift): on a quiet
# machine, apart from the deterministic suite.
perf: $(STAMP)
	$(BIN)/pytest -m performance

## requirements: rewrite requirements/serving.txt (the Bento's hashed lock) after a dependency change
requirements: $(STAMP)
	$(BIN)/python requirements/compile.py

## bento: build the serving Bento with the models configs/serving.yaml pins (CONFIG=...)
CONFIG ?= configs/serving.yaml
bento: $(STAMP)
	$(BIN)/tonle bento build --config $(CONFIG)

## system-deps: Debian packages the integration tests drive (installed once, as root)
system-deps:
	.ci/system-deps $(SYSTEM_PACKAGES)

clean:
	rm -rf $(VENV) .tonle .mypy_cache .ruff_cache .pytest_cache test-artifacts
