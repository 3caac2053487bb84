# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

$(STAMP): pyproject.toml hatch_build.py processors/_cshape.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[all]" --group test
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/auditlog demo --dir demo-out

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check auditlog processors store tests benchmarks hatch_build.py
	$(BIN)/ruff format --check auditlog processors store tests benchmarks hatch_build.py

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) demo-out .mypy_cache .ruff_cache .pytest_cache .hypothesis
