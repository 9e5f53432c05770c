#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the sources vendored in the llama-cpp-python sdist of the installed version,
# so Somner and its anchor run the same llama.cpp. Cached outside the repository; prints the binary's path.
# Usage: benchmarks/build_llama_server.sh [PYTHON]     (PYTHON defaults to .venv/bin/python)
set -euo pipefail
PY=${1:-.venv/bin/python}
VER=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
CACHE=${SOMNER_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/somner-bench}
OUT="$CACHE/llama-server-$VER"
BIN="$OUT/build/bin/llama-server"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$OUT"
if [ ! -d "$OUT/src" ]; then
  TMP=$(mktemp -d)
  "$PY" -m pip download --quiet --no-deps --no-binary=:all: "llama-cpp-python==$VER" -d "$TMP" >&2
  tar xzf "$TMP/llama_cpp_python-$VER.tar.gz" -C "$TMP"
  mv "$TMP/llama_cpp_python-$VER/vendor/llama.cpp" "$OUT/src"
  rm -rf "$TMP"
fi
cmake -S "$OUT/src" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$OUT/build" --target llama-server -j "$(nproc)" >&2
echo "$BIN"
