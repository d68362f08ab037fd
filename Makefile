# Hades developer commands. `make run` runs the whole system locally; `make test` runs the test suite.
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## nats-server + submit (8080) + logs (8081) + dispatch (8082); Ctrl-C stops all
	bash tools/install_docker.sh
	$(BIN)/python tools/run_local.py

test: $(STAMP)  ## the whole suite (Docker tests skip without an engine, except when CI=true)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) .hades .pytest_cache .ruff_cache .mypy_cache *.egg-info
