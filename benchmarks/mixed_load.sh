#!/usr/bin/env bash
# Mixed load (streams generating while long prompts arrive), Somner vs llama-server, medians of 3 rounds.
# Usage (from the repository root, after `make setup`):
#   benchmarks/mixed_load.sh [--streams 4] [--long-prompts 4] [--every 4.0] [--prompt-tokens 2000] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BIN=$(benchmarks/build_llama_server.sh "$PY")
exec "$PY" benchmarks/mixed_load.py --llama-server "$BIN" "$@"
