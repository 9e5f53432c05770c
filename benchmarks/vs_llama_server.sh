#!/usr/bin/env bash
# Somner vs llama.cpp's llama-server, same GGUF, threads and slots, alternating, medians of 3 rounds.
# Usage (from the repository root, after `make setup`):
#   benchmarks/vs_llama_server.sh [--threads 2] [--slots 8] [--ctx 1024] [--concurrency 1,4,8,16] [--rounds 3]
#                                 [--max-tokens 128] [--chat] [--model FILE.gguf] [--gpu-layers N]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BIN=$(benchmarks/build_llama_server.sh "$PY")
exec "$PY" benchmarks/vs_llama_server.py --llama-server "$BIN" "$@"
