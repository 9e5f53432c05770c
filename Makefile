# The two commands: `make run` and `make test`. Everything lives in .venv; nothing is installed globally.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp once (a few minutes); use every core for it.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
ARGS ?=
PY_DIRS := $(wildcard src tests benchmarks)

.PHONY: setup dev run test lint format typecheck unit clean wheelhouse

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"' \
		|| { echo "Somner needs Python 3.11 or newer as $(PYTHON)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) \
		|| { echo "python3 -m venv failed: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.setup-done: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[default-model]'
	@touch $@

$(VENV)/.dev-done: $(VENV)/.setup-done
	$(BIN)/pip install --quiet -e '.[default-model,dev]'
	@touch $@

setup: $(VENV)/.setup-done

dev: $(VENV)/.dev-done

run: setup
	$(BIN)/somner serve $(ARGS)

format: dev
	$(BIN)/ruff format $(PY_DIRS)

lint: dev
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/ruff check $(PY_DIRS)

typecheck: dev
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; make treats every non-zero exit as failure.
test: lint typecheck
	$(BIN)/pytest $(ARGS)

unit: dev
	$(BIN)/pytest tests/unit tests/api $(ARGS)

# Every wheel Somner needs, itself and a built llama-cpp-python included, for an install without an index:
#   pip install --no-index --find-links wheelhouse somner
# pip reuses its cache of built wheels, so llama.cpp compiles only the first time. That cached wheel is built for
# this machine's CPU (and keeps the CMAKE_ARGS of its first build); for other machines, build with
# PIP_NO_CACHE_DIR=1 CMAKE_ARGS="-DGGML_NATIVE=OFF ...". WHEELHOUSE_EXTRAS=default-model adds the default model.
WHEELHOUSE ?= wheelhouse
WHEELHOUSE_EXTRAS ?=
wheelhouse: $(BIN)/python
	$(BIN)/pip wheel --disable-pip-version-check --wheel-dir $(WHEELHOUSE) '.$(if $(WHEELHOUSE_EXTRAS),[$(WHEELHOUSE_EXTRAS)])'

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
