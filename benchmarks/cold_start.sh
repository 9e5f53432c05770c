#!/usr/bin/env bash
# Cold start (server start to the first streamed token), Somner vs llama-server, medians of 5 rounds.
# Usage (from the repository root, after `make setup`):
#   benchmarks/cold_start.sh [--rounds 5] [--threads 2] [--slots 8] [--ctx 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BIN=$(benchmarks/build_llama_server.sh "$PY")
exec "$PY" benchmarks/cold_start.py --llama-server "$BIN" "$@"
