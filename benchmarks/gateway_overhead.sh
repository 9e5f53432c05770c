#!/usr/bin/env bash
# What the gateway adds in front of a zero-delay OpenAI-compatible upstream (benchmarks/mock_upstream.py):
# mock direct vs through Somner (auth on, a key with a generous rate limit, usage records and metrics on) and,
# when `litellm[proxy]` can be installed into ~/.cache/somner-bench/litellm-venv, through LiteLLM's proxy (1 worker,
# no database). Targets are measured alternating, round by round; the table shows medians over the rounds.
#
#   benchmarks/gateway_overhead.sh [--rounds 3] [--duration 5] [--stream-requests 48] [--no-litellm]
#                                  [--workers 2] [--tokens 16] [--chunks 64] [--serve-args "..."] [--keep DIR]
#
# With --workers N (default 2; 1 or 0 to skip) two more targets run: Somner with its limits in Redis
# (somner-redis) and `somner serve --workers N` with the same (somner-wN): several gateway processes need Redis,
# so that pair compares like with like. On 2 cores the load generator and the mock compete with the workers.
#
# Non-streamed: wrk (Debian's `wrk`; benchmarks/wrk_post.lua) at c=1 and c=64 for --duration seconds, chat
# requests of max_tokens=--tokens. Streamed, chat streams of --chunks chunks (one token each): at c=1
# benchmarks/loadgen.py (time to first token); at c=16 wrk reading whole streams for the relay's throughput
# (tokens/s = streams/s x chunks; a Python client tops out near 16k tokens/s itself), and loadgen again for the
# time to first token under that load.
# Needs: wrk (`apt-get install -y wrk`), curl, the project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROUNDS=3
DURATION=5
STREAM_REQUESTS=48
TOKENS=16
CHUNKS=64
LITELLM=1
WORKERS=2
SERVE_ARGS=""
KEEP=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --stream-requests) STREAM_REQUESTS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --chunks) CHUNKS=$2; shift 2 ;;
    --no-litellm) LITELLM=0; shift ;;
    --workers) WORKERS=$2; shift 2 ;;
    --serve-args) SERVE_ARGS=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

WORK=${KEEP:-$(mktemp -d /tmp/somner-overhead.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n "$KEEP" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {  # URL, seconds, [header]
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null ${3:+-H "$3"} "$1"; do
    if ((SECONDS > deadline)); then echo "not ready: $1" >&2; return 1; fi
    sleep 0.2
  done
}

# -- the mock ------------------------------------------------------------------------------------------------------
MOCK_PORT=$(free_port)
"$PY" benchmarks/mock_upstream.py --port "$MOCK_PORT" --chunks "$CHUNKS" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models" 20

# -- Somner --------------------------------------------------------------------------------------------------------
ADMIN_KEY=sk-somner-bench-admin-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
start_somner() {  # NAME EXTRA_YAML [serve args...]: starts one Somner, sets URL and KEY
  local name=$1 extra=$2 port
  shift 2
  port=$(free_port)
  cat >"$WORK/$name.yaml" <<EOF
limits: {max_concurrent: 64}
models:
  - {id: mock, urls: ["http://127.0.0.1:$MOCK_PORT"], upstream_model: mock}
$extra
EOF
  # shellcheck disable=SC2086
  env SOMNER_ADMIN_KEY="$ADMIN_KEY" "$PY" -m somner serve --config "$WORK/$name.yaml" --data-dir "$WORK/$name" \
    --port "$port" "$@" $SERVE_ARGS >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/ready" 120
  URL=http://127.0.0.1:$port
  KEY=$(curl -sf -X POST "$URL/admin/keys" -H "authorization: Bearer $ADMIN_KEY" -H 'content-type: application/json' \
    -d '{"user": "bench", "rpm": 100000000, "tpm": 2000000000}' | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["key"])')
  echo "$name on $URL (data and log in $WORK/$name*)" >&2
}
start_somner somner ""
SOMNER_URL=$URL
TARGETS=("direct http://127.0.0.1:$MOCK_PORT -" "somner $URL $KEY")

# -- several gateway processes (--workers): limits shared through Redis, so both sides of the comparison use it ----
if ((WORKERS > 1)); then
  if command -v redis-server >/dev/null; then
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
    start_somner somner-redis "redis: {url: \"redis://127.0.0.1:$REDIS_PORT/0\", key_prefix: one}"
    TARGETS+=("somner-redis $URL $KEY")
    start_somner "somner-w$WORKERS" "redis: {url: \"redis://127.0.0.1:$REDIS_PORT/0\", key_prefix: many}" \
      --workers "$WORKERS"
    TARGETS+=("somner-w$WORKERS $URL $KEY")
  else
    echo "note: redis-server is missing (apt-get install -y redis-server); measuring without --workers" >&2
  fi
fi

# -- LiteLLM (optional) --------------------------------------------------------------------------------------------
if ((LITELLM)); then
  VENV=$HOME/.cache/somner-bench/litellm-venv
  if [[ ! -x $VENV/bin/litellm ]]; then
    echo "installing litellm[proxy] into $VENV ..." >&2
    { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'litellm[proxy]'; } >"$WORK/litellm-install.log" 2>&1 || true
  fi
  if [[ -x $VENV/bin/litellm ]]; then
    LITELLM_PORT=$(free_port)
    cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: mock
    litellm_params: {model: openai/mock, api_base: "http://127.0.0.1:$MOCK_PORT/v1", api_key: none}
EOF
    LITELLM_KEY=sk-litellm-bench-$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
    # Recent LiteLLM refuses to start without a master key: that is its auth, comparable to Somner's.
    (cd "$WORK" && LITELLM_MASTER_KEY=$LITELLM_KEY exec "$VENV/bin/litellm" --config "$WORK/litellm.yaml" \
      --port "$LITELLM_PORT" --num_workers 1) \
      >"$WORK/litellm.log" 2>&1 &
    PIDS+=($!)
    if wait_http "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 180; then
      TARGETS+=("litellm http://127.0.0.1:$LITELLM_PORT $LITELLM_KEY")
    else
      echo "note: LiteLLM did not start (log: $WORK/litellm.log); measuring without it" >&2
    fi
  else
    echo "note: litellm[proxy] could not be installed (see $WORK/litellm-install.log); measuring without it" >&2
  fi
fi

# -- measurements --------------------------------------------------------------------------------------------------
BODY="{\"model\":\"mock\",\"messages\":[{\"role\":\"user\",\"content\":\"Say something short.\"}],\"max_tokens\":$TOKENS}"
STREAM_BODY="{\"model\":\"mock\",\"messages\":[{\"role\":\"user\",\"content\":\"Say something.\"}],\"max_tokens\":$CHUNKS,\"stream\":true}"
measure() {  # NAME URL KEY ROUND
  local name=$1 url=$2 key=$3 round=$4 c line
  [[ $key == - ]] && key=""
  for c in 1 64; do
    line=$(WRK_BODY=$BODY WRK_KEY=$key wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s -s benchmarks/wrk_post.lua "$url" \
      | tail -n 1)
    echo "{\"target\":\"$name\",\"bench\":\"json_c$c\",\"round\":$round,\"tokens\":$TOKENS,\"wrk\":$line}" >>"$RESULTS"
  done
  line=$(WRK_BODY=$STREAM_BODY WRK_KEY=$key wrk -t1 -c16 -d"${DURATION}s" --timeout 10s -s benchmarks/wrk_post.lua \
    "$url" | tail -n 1)
  echo "{\"target\":\"$name\",\"bench\":\"wrk_stream_c16\",\"round\":$round,\"chunks\":$CHUNKS,\"wrk\":$line}" >>"$RESULTS"
  for c in 1 16; do
    line=$("$PY" benchmarks/loadgen.py "$url" --model mock --chat --concurrency "$c" --max-tokens "$CHUNKS" \
      --requests $((c == 1 ? STREAM_REQUESTS / 2 : STREAM_REQUESTS * 4)) ${key:+--api-key "$key"} || true)
    echo "{\"target\":\"$name\",\"bench\":\"stream_c$c\",\"round\":$round,\"loadgen\":${line:-null}}" >>"$RESULTS"
  done
}
for ((round = 1; round <= ROUNDS; round++)); do
  order=("${TARGETS[@]}")
  if ((round % 2 == 0)); then  # alternate who goes first
    order=()
    for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[i]}"); done
  fi
  for target in "${order[@]}"; do
    read -r name url key <<<"$target"
    echo "round $round: $name" >&2
    measure "$name" "$url" "$key" "$round"
  done
done

# Evidence that the Somner path did its bookkeeping during the run (usage records, metrics).
curl -sf "$SOMNER_URL/admin/usage?since=1h&by=key" -H "authorization: Bearer $ADMIN_KEY" \
  >"$WORK/usage.json" || true
curl -sf "$SOMNER_URL/metrics" -H "authorization: Bearer $ADMIN_KEY" \
  | grep -E '^somner_(requests_total|completion_tokens_total)' >"$WORK/metrics.txt" || true

"$PY" - "$RESULTS" "$WORK/usage.json" <<'EOF'
import json, statistics, sys

rows = [json.loads(line) for line in open(sys.argv[1])]
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

targets = list(dict.fromkeys(r["target"] for r in rows))
BENCHES = ("json_c1", "json_c64", "stream_c1", "wrk_stream_c16", "stream_c16")
table = {}
for target in targets:
    for bench in BENCHES:
        rs = [r for r in rows if r["target"] == target and r["bench"] == bench]
        if bench.startswith(("json", "wrk")):
            w = [r["wrk"] for r in rs]
            rps = [x["requests"] / (x["duration_us"] / 1e6) for x in w]
            per_request = rs[0]["tokens"] if bench.startswith("json") else rs[0]["chunks"]
            table[target, bench] = {
                "p50": med([x["p50_us"] / 1000 for x in w]), "p99": med([x["p99_us"] / 1000 for x in w]),
                "rps": med(rps), "tps": med([v * per_request for v in rps]), "ttft": None,
                "errors": sum(x["non2xx"] + x["socket_errors"] for x in w),
            }
        else:
            g = [r["loadgen"] for r in rs if r["loadgen"]]
            table[target, bench] = {
                "p50": None, "p99": None,
                "rps": med([x["requests_per_s"] for x in g]), "tps": med([x["output_tokens_per_s"] for x in g]),
                "ttft": med([x["ttft_ms"]["p50"] for x in g]), "ttft99": med([x["ttft_ms"]["p99"] for x in g]),
                "errors": sum(x["errors"] for x in g) + (len(rs) - len(g)),
            }
rounds = max(r["round"] for r in rows)
print("json_*: non-streamed (wrk); wrk_stream_c16: whole streams read by wrk (p50/p99 = a whole stream);")
print("stream_*: loadgen.py streams (TTFT); tokens/s: relayed completion tokens")
print(f"\nmedians of {rounds} rounds (latency and TTFT in ms; tokens/s are relayed completion tokens)\n")
fmt = "{:<12} {:<14} {:>9} {:>9} {:>10} {:>11} {:>10} {:>10} {:>7}"
print(fmt.format("target", "bench", "p50", "p99", "req/s", "tokens/s", "TTFT p50", "TTFT p99", "errors"))
def num(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"
for target in targets:
    for bench in BENCHES:
        t = table[target, bench]
        print(fmt.format(target, bench, num(t["p50"]), num(t["p99"]), num(t["rps"], 1), num(t["tps"], 0),
                         num(t["ttft"]), num(t.get("ttft99")), t["errors"]))
print("\nadded over direct (median p50 / p99 latency at c=1 non-streamed; TTFT p50 at c=1 streamed), ms")
base_json, base_ttft = table["direct", "json_c1"], table["direct", "stream_c1"]
for target in targets[1:]:
    j, s = table[target, "json_c1"], table[target, "stream_c1"]
    print(f"{target:<12} +{j['p50'] - base_json['p50']:.2f} / +{j['p99'] - base_json['p99']:.2f}   "
          f"TTFT +{s['ttft'] - base_ttft['ttft']:.2f}" if s["ttft"] is not None else f"{target:<12} (no streams)")
try:
    usage = json.load(open(sys.argv[2]))["data"]
    print("\nsomner usage records during the run:", sum(u["requests"] for u in usage),
          "requests,", sum(u["completion_tokens"] for u in usage), "completion tokens")
except Exception:
    pass
EOF
