# The two commands: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test test-loaded provision lint typecheck pytest bench clean

$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

## Run the daemon in the foreground on the embedded default config.
run: $(VENV)/.installed-run
	$(BIN)/supervisor run -c config/supervisor.toml

## Install what the tests need, lint, type-check and run every test.
test: $(VENV)/.installed-test provision lint typecheck pytest

## The suite with two CPU hogs beside it, as on a shared CI machine (run it twice).
test-loaded: $(VENV)/.installed-test provision
	stress-ng --cpu 2 --quiet & hog=$$!; \
	$(BIN)/pytest $(PYTEST_ARGS); status=$$?; kill $$hog; wait $$hog 2>/dev/null; exit $$status

## Test dependencies beyond Python (Prometheus, promtool): installed with apt as root.
provision:
	bash tests/provision.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check supervisor tests bench
	$(BIN)/ruff format --check supervisor tests bench
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

pytest: $(VENV)/.installed-test
	$(BIN)/pytest $(PYTEST_ARGS)

## Benchmarks against the floor (and, later, the peers); prints a table.
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
