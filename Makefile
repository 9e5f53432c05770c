# The two commands: `make run` and `make test`. Everything lives in .venv; nothing is installed globally.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp once (a few minutes); use every core for it.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
ARGS ?=
PY_DIRS := $(wildcard src tests benchmarks)

# GPU=cuda: llama-cpp-python compiled with CUDA (`make setup GPU=cuda`, `make wheelhouse GPU=cuda`). It needs the CUDA
# toolkit (nvcc) and compiles for this machine's GPU unless CUDA_ARCHITECTURES names others ("86;89"; needed where
# there is no GPU to detect); LLAMA_CMAKE_ARGS replaces the CMake flags altogether. Without GPU: for the CPU.
GPU ?=
ifneq ($(filter-out cuda,$(GPU)),)
$(error GPU=$(GPU) is not supported: use GPU=cuda, or leave GPU unset for the CPU)
endif
CUDA_ARCHITECTURES ?=
LLAMA_CMAKE_ARGS ?= -DGGML_CUDA=on$(if $(CUDA_ARCHITECTURES), -DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHITECTURES))
# The llama-cpp-python requirement exactly as pyproject.toml pins it.
LLAMA_PIN = $(shell $(PYTHON) -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print(next(d for d in deps if d.startswith("llama-cpp-python")))')

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

# With GPU=cuda, llama-cpp-python is compiled again with CUDA over the CPU build: from source (--no-binary), never
# from pip's cache of built wheels (--no-cache-dir, which would hand back the CPU build), replacing the installed one
# (--force-reinstall, --no-deps). The check after it fails unless the library it built has the CUDA backend.
$(VENV)/.cuda-done: $(VENV)/.setup-done
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir --no-binary llama-cpp-python \
		--force-reinstall --no-deps '$(LLAMA_PIN)'
	$(BIN)/python -c 'import importlib.util, pathlib, sys; lib = pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib"; sys.exit(0 if any(lib.glob("libggml-cuda*")) else "llama-cpp-python was built without CUDA: is nvcc on PATH?")'
	@touch $@

setup: $(VENV)/.setup-done $(if $(filter cuda,$(GPU)),$(VENV)/.cuda-done)

dev: $(VENV)/.dev-done

# Bytecode compiled ahead (quick when nothing changed): the editable install has none, and where the environment
# says PYTHONDONTWRITEBYTECODE (as many container images do) every start would compile Somner's modules again.
run: setup
	@$(BIN)/python -m compileall -q src/somner
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
# GPU=cuda builds llama-cpp-python with CUDA, always afresh (the cached wheel is the CPU one).
WHEELHOUSE ?= wheelhouse
WHEELHOUSE_EXTRAS ?=
wheelhouse: $(BIN)/python
	$(if $(filter cuda,$(GPU)),CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" PIP_NO_CACHE_DIR=1 )$(BIN)/pip wheel --disable-pip-version-check \
		$(if $(filter cuda,$(GPU)),--no-binary llama-cpp-python )--wheel-dir $(WHEELHOUSE) '.$(if $(WHEELHOUSE_EXTRAS),[$(WHEELHOUSE_EXTRAS)])'

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
