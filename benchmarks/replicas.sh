#!/usr/bin/env bash
# Scale-out: `somner serve` replicas sharing one PostgreSQL and one Redis, in front of a zero-delay upstream
# (benchmarks/mock_upstream.py). Two questions:
#
#  1. Throughput: non-streamed chat requests at c=--connections (64) in total (wrk, benchmarks/wrk_post.lua)
#     against one replica (one wrk) and against --replicas replicas (one wrk per replica at once, the connections
#     split between them, requests/s summed), with the mock direct (one wrk) as the reference row.
#  2. The Redis round trip: one replica at c=1 with `redis.url` set against one without it (in-memory limiter),
#     and raw Redis round trips (PING, the limiter's reserve script) from benchmarks/replicas_redis_rtt.py.
#
#   benchmarks/replicas.sh [--rounds 3] [--duration 5] [--replicas 3] [--connections 64] [--tokens 16]
#                          [--key-limits JSON] [--serve-args "..."] [--keep DIR]
#
# Every gateway uses the same PostgreSQL database (a throwaway cluster: initdb as the `postgres` user when run as
# root, fsync=off, on a free loopback port). The Redis-backed replicas (the first also serves the "1 replica" row;
# the others sit idle then) and the in-memory one run side by side for the whole benchmark. Each measurement uses a
# fresh key with limits (--key-limits; default rpm 1e9 and tpm 2e9, never reached, and within the 32-bit integers
# PostgreSQL keeps them in), so the limiter really runs and every measurement starts with empty windows; a 429, any
# other non-2xx answer or a socket error fails that measurement: it is reported loudly (with what the gateways
# logged meanwhile), left out of the medians, and the script exits with status 1 after printing the tables.
# Configurations alternate within each round (reversed every other round); the tables show medians of the rounds.
# SOMNER_* variables of the caller's environment are not passed to the gateways (the config here is complete).
# Needs: wrk, curl, redis-server + redis-cli, PostgreSQL 15's binaries (SOMNER_PG_BIN, default
# /usr/lib/postgresql/15/bin) and psql, runuser when run as root, the project's venv.
set -euo pipefail
COMMAND="benchmarks/replicas.sh${*:+ $*}"
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PG_BIN=${SOMNER_PG_BIN:-/usr/lib/postgresql/15/bin}
ROUNDS=3
DURATION=5
REPLICAS=3
TOKENS=16
CONNECTIONS=64
KEY_LIMITS='{"rpm": 1000000000, "tpm": 2000000000}'
SERVE_ARGS=""
KEEP=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --replicas) REPLICAS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --key-limits) KEY_LIMITS=$2; shift 2 ;;
    --serve-args) SERVE_ARGS=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
((REPLICAS >= 2)) || { echo "--replicas must be at least 2" >&2; exit 2; }
for tool in wrk curl redis-server redis-cli psql "$PG_BIN/initdb" "$PG_BIN/pg_ctl"; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is missing (apt-get install -y wrk redis-server postgresql-15)" >&2
    exit 1
  fi
done
while read -r name; do unset "$name"; done < <(compgen -e | grep '^SOMNER_' || true)

WORK=${KEEP:-$(mktemp -d /tmp/somner-replicas.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
# PostgreSQL runs as `postgres` when we are root, so its directory is its own (WORK may be private to us).
PG_BASE=$(mktemp -d /tmp/somner-replicas-pg.XXXXXX)
as_postgres() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }
if ((EUID == 0)); then chown postgres "$PG_BASE"; fi
PG_STARTED=0
PIDS=()      # servers: mock, redis, gateways
WRK_PIDS=()  # wrk processes of the measurement in progress
cleanup() {
  local status=$? pid
  for pid in "${WRK_PIDS[@]}" "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${WRK_PIDS[@]}" "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if ((PG_STARTED)); then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_BASE/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [[ -n "$KEEP" ]]; then
    cp "$PG_BASE/log" "$WORK/postgres.log" 2>/dev/null || true
  else
    rm -rf "$WORK"
  fi
  rm -rf "$PG_BASE"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {  # URL SECONDS PID: until URL answers 2xx; fails early when PID has exited
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$1"; do
    if ! kill -0 "$3" 2>/dev/null; then echo "process $3 exited before $1 answered" >&2; return 1; fi
    if ((SECONDS > deadline)); then echo "not ready after $2 s: $1" >&2; return 1; fi
    sleep 0.2
  done
}

echo "# somner replicas benchmark"
echo
echo "command: \`$COMMAND\`"
echo
echo "machine: $(nproc) CPUs, $(uname -sr); somner $("$PY" -c 'import somner; print(somner.__version__)');" \
  "$(redis-server --version | grep -o 'v=[^ ]*' | sed 's/v=/redis /'); $("$PG_BIN/postgres" --version)"
echo

# -- PostgreSQL ----------------------------------------------------------------------------------------------------
PG_PORT=$(free_port)
echo "starting PostgreSQL on :$PG_PORT ($PG_BASE)" >&2
as_postgres "$PG_BIN/initdb" -D "$PG_BASE/data" -A trust -U postgres -E UTF8 >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; exit 1; }
PG_STARTED=1
as_postgres "$PG_BIN/pg_ctl" -D "$PG_BASE/data" -l "$PG_BASE/log" -w start \
  -o "-p $PG_PORT -k $PG_BASE -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" >/dev/null \
  || { cat "$PG_BASE/log" >&2; exit 1; }
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 'CREATE DATABASE somner_bench' >/dev/null
DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$PG_PORT/somner_bench"

# -- Redis ---------------------------------------------------------------------------------------------------------
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" --appendonly no \
  --logfile "$WORK/redis/redis.log" &
PIDS+=($!)
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
deadline=$((SECONDS + 10))
until [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; do
  ((SECONDS < deadline)) || { echo "redis-server did not start" >&2; cat "$WORK/redis/redis.log" >&2; exit 1; }
  sleep 0.1
done
echo "redis on :$REDIS_PORT" >&2

# -- the mock ------------------------------------------------------------------------------------------------------
MOCK_PORT=$(free_port)
"$PY" benchmarks/mock_upstream.py --port "$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models" 20 "${PIDS[-1]}"

# -- gateways ------------------------------------------------------------------------------------------------------
ADMIN_KEY=sk-somner-bench-admin-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
write_config() {  # FILE [REDIS_URL]
  cat >"$1" <<EOF
limits: {max_concurrent: $CONNECTIONS}
drain_timeout: 5s
models:
  - {id: mock, urls: ["http://127.0.0.1:$MOCK_PORT"], upstream_model: mock}
database: {url: "$DATABASE_URL"}
EOF
  if [[ -n "${2:-}" ]]; then echo "redis: {url: \"$2\"}" >>"$1"; fi
}
write_config "$WORK/redis.yaml" "$REDIS_URL"
write_config "$WORK/memory.yaml"
declare -A GW_PORT GW_PID
start_gateway() {  # NAME CONFIG
  local port
  port=$(free_port)
  # shellcheck disable=SC2086
  env SOMNER_ADMIN_KEY="$ADMIN_KEY" "$PY" -m somner serve --config "$2" --data-dir "$WORK/$1" --port "$port" \
    $SERVE_ARGS >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  GW_PORT[$1]=$port
  GW_PID[$1]=$!
}
check_up() {  # NAME...: every named gateway's process lives and its /ready answers 200
  local name
  for name in "$@"; do
    if ! kill -0 "${GW_PID[$name]}" 2>/dev/null \
      || ! curl -sf -o /dev/null "http://127.0.0.1:${GW_PORT[$name]}/ready"; then
      echo "gateway $name is not up; the end of $WORK/$name.log:" >&2
      tail -n 40 "$WORK/$name.log" >&2 || true
      exit 1
    fi
  done
}
REPLICA_NAMES=()
for ((i = 0; i < REPLICAS; i++)); do REPLICA_NAMES+=("r$i"); done
# The first replica creates the schema and the admin key; the others start once it is ready and find them.
start_gateway r0 "$WORK/redis.yaml"
wait_http "http://127.0.0.1:${GW_PORT[r0]}/ready" 120 "${GW_PID[r0]}" || { tail -n 40 "$WORK/r0.log" >&2; exit 1; }
for name in "${REPLICA_NAMES[@]:1}"; do start_gateway "$name" "$WORK/redis.yaml"; done
start_gateway memory "$WORK/memory.yaml"
for name in "${REPLICA_NAMES[@]:1}" memory; do
  wait_http "http://127.0.0.1:${GW_PORT[$name]}/ready" 120 "${GW_PID[$name]}" \
    || { tail -n 40 "$WORK/$name.log" >&2; exit 1; }
done
check_up "${REPLICA_NAMES[@]}" memory
echo "gateways up: $(for n in "${REPLICA_NAMES[@]}" memory; do printf '%s:%s ' "$n" "${GW_PORT[$n]}"; done)" >&2

LIMITED_KEY=$("$PY" -c 'import json, sys; print(json.dumps({"user": "replicas-bench", **json.loads(sys.argv[1])}))' \
  "$KEY_LIMITS")
UNLIMITED_KEY='{"user": "replicas-bench"}'
new_key() {  # [BODY]: sets SECRET and KEY_ID to a fresh key (default: with --key-limits); exits when it cannot
  local answer
  answer=$(curl -sS -X POST "http://127.0.0.1:${GW_PORT[r0]}/admin/keys" -H "authorization: Bearer $ADMIN_KEY" \
    -H 'content-type: application/json' -d "${1:-$LIMITED_KEY}" -w '\n%{http_code}')
  if [[ ${answer##*$'\n'} != 201 ]]; then
    echo "cannot create a key: $answer" >&2
    exit 1
  fi
  read -r SECRET KEY_ID < <("$PY" -c 'import json, sys; k = json.load(sys.stdin); print(k["key"], k["id"])' \
    <<<"${answer%$'\n'*}")
}
window_of() { redis-cli -p "$REDIS_PORT" zcard "somner:{$1}:requests"; }  # KEY_ID: events in its requests window

MESSAGES='[{"role":"user","content":"Say something short."}]'
BODY="{\"model\":\"mock\",\"messages\":$MESSAGES,\"max_tokens\":$TOKENS}"
run_wrk() {  # OUT C SECONDS URL KEY: one wrk in the background, its JSON line into OUT
  WRK_BODY=$BODY WRK_KEY=$5 wrk -t1 -c"$2" -d"${3}s" --timeout 10s -s benchmarks/wrk_post.lua "$4" >"$1" 2>&1 &
  WRK_PIDS+=($!)
}
wrk_total() {  # FIELD JSON_LIST: the sum of FIELD over wrk result lines ("failures": non2xx + socket_errors)
  "$PY" -c '
import json, sys
runs = json.loads(sys.argv[2])
print(sum(r["non2xx"] + r["socket_errors"] if sys.argv[1] == "failures" else r[sys.argv[1]] for r in runs))' "$1" "$2"
}
gateway_at() {  # URL: the name of the gateway listening there, or nothing (the mock)
  local name
  for name in "${!GW_PORT[@]}"; do
    if [[ $1 == "http://127.0.0.1:${GW_PORT[$name]}" ]]; then echo "$name"; fi
  done
}
log_lines() { wc -l <"$WORK/$1.log"; }  # NAME
why_failed() {  # NAME FROM_LINE: what the gateway logged since FROM_LINE: request statuses, warnings, errors
  echo "  $1 since the measurement began: request statuses" \
    "$(tail -n +"$(($2 + 1))" "$WORK/$1.log" | awk '{for (i = 1; i < NF; i++) if ($i == "somner.requests:")
      print $(i + 4)}' | sort | uniq -c | awk '{printf " %s×%s", $1, $2}')" >&2
  tail -n +"$(($2 + 1))" "$WORK/$1.log" | grep -E '^[0-9-]+ [0-9:,]+ (WARNING|ERROR)' | cut -d' ' -f3- \
    | sort | uniq -c | sort -rn | head -n 8 | sed 's/^/   /' >&2 || true
}
# Warm every gateway (upstream connections, auth cache, the limiter's scripts) with a key of its own limits.
new_key
WRK_PIDS=()
for name in "${REPLICA_NAMES[@]}" memory; do
  run_wrk "$WORK/warm-$name.out" 4 1 "http://127.0.0.1:${GW_PORT[$name]}" "$SECRET"
done
for pid in "${WRK_PIDS[@]}"; do wait "$pid"; done
WRK_PIDS=()
for name in "${REPLICA_NAMES[@]}" memory; do
  warm=$(tail -n 1 "$WORK/warm-$name.out")
  if [[ $warm != '{'* ]] || (($(wrk_total failures "[$warm]") > 0)); then
    echo "FAILED: warming $name: $warm" >&2
    why_failed "$name" 0
    exit 1
  fi
done

# measure BENCH CONFIG ROUND C KEY_ID|- URL KEY [URL KEY ...]: one wrk per URL at once, C connections split
# between them, one JSON line into RESULTS. Any non-2xx answer or socket error marks the measurement failed, loudly:
# the tables leave it out of the medians, and the script exits with status 1 at the end.
FAILED=()
measure() {
  local bench=$1 config=$2 round=$3 connections=$4 key_id=$5 parts i c line lines window failures name
  local -A since=()
  shift 5
  parts=$(($# / 2))
  for ((i = 0; i < parts; i++)); do
    name=$(gateway_at "${@:2*i+1:1}")
    if [[ -n $name ]]; then since[$name]=$(log_lines "$name"); fi
  done
  WRK_PIDS=()
  for ((i = 0; i < parts; i++)); do
    c=$((connections / parts + (i < connections % parts ? 1 : 0)))
    run_wrk "$WORK/wrk-$i.out" "$c" "$DURATION" "${@:2*i+1:1}" "${@:2*i+2:1}"
  done
  for ((i = 0; i < parts; i++)); do
    wait "${WRK_PIDS[i]}" || { echo "wrk failed:" >&2; cat "$WORK/wrk-$i.out" >&2; exit 1; }
  done
  WRK_PIDS=()
  lines=""
  for ((i = 0; i < parts; i++)); do
    line=$(tail -n 1 "$WORK/wrk-$i.out")
    [[ $line == '{'* ]] || { echo "wrk printed no result:" >&2; cat "$WORK/wrk-$i.out" >&2; exit 1; }
    lines+="${lines:+,}$line"
  done
  window=null
  [[ $key_id == - ]] || window=$(window_of "$key_id")
  echo "{\"bench\":\"$bench\",\"config\":\"$config\",\"round\":$round,\"connections\":$connections," \
    "\"window\":$window,\"wrk\":[$lines]}" >>"$RESULTS"
  failures=$(wrk_total failures "[$lines]")
  echo "  $config: $(wrk_total requests "[$lines]") requests, $failures failed, Redis window $window" >&2
  if ((failures > 0)); then
    FAILED+=("$config ($bench) round $round: $failures of $(wrk_total requests "[$lines]") requests failed")
    echo "FAILED: ${FAILED[-1]} (non-2xx or socket errors)" >&2
    for name in "${!since[@]}"; do why_failed "$name" "${since[$name]}"; done
  fi
}

# throughput CONFIG ROUND: CONFIG is direct, "1 replica" or "N replicas", the latter two with " (no key limits)"
# appended for a key without limits (which never asks Redis).
throughput() {
  local args=() name key=$LIMITED_KEY names=("${REPLICA_NAMES[@]}")
  if [[ $1 == direct ]]; then
    measure throughput direct "$2" "$CONNECTIONS" - "http://127.0.0.1:$MOCK_PORT" ""
    return
  fi
  if [[ $1 == "1 replica"* ]]; then names=(r0); fi
  if [[ $1 == *"(no key limits)" ]]; then key=$UNLIMITED_KEY; fi
  check_up "${names[@]}"
  new_key "$key"
  for name in "${names[@]}"; do args+=("http://127.0.0.1:${GW_PORT[$name]}" "$SECRET"); done
  measure throughput "$1" "$2" "$CONNECTIONS" "$KEY_ID" "${args[@]}"
}
redis_cost() {  # memory|redis ROUND
  local gateway=r0
  if [[ $1 == memory ]]; then gateway=memory; fi
  check_up "$gateway"
  new_key
  measure redis_cost "$1" "$2" 1 "$KEY_ID" "http://127.0.0.1:${GW_PORT[$gateway]}" "$SECRET"
  if [[ $1 == memory && $(window_of "$KEY_ID") != 0 ]]; then
    echo "FAILED: the in-memory gateway wrote to Redis" >&2
    exit 1
  fi
}

THROUGHPUT_CONFIGS=(direct "1 replica" "$REPLICAS replicas" "1 replica (no key limits)"
  "$REPLICAS replicas (no key limits)")
REDIS_CONFIGS=(memory redis)
for ((round = 1; round <= ROUNDS; round++)); do
  t_order=("${THROUGHPUT_CONFIGS[@]}")
  r_order=("${REDIS_CONFIGS[@]}")
  if ((round % 2 == 0)); then  # alternate who goes first
    t_order=()
    for ((i = ${#THROUGHPUT_CONFIGS[@]} - 1; i >= 0; i--)); do t_order+=("${THROUGHPUT_CONFIGS[i]}"); done
    r_order=("${REDIS_CONFIGS[1]}" "${REDIS_CONFIGS[0]}")
  fi
  echo "round $round" >&2
  for config in "${t_order[@]}"; do throughput "$config" "$round"; done
  for config in "${r_order[@]}"; do redis_cost "$config" "$round"; done
done
check_up "${REPLICA_NAMES[@]}" memory

echo "measuring raw Redis round trips" >&2
"$PY" benchmarks/replicas_redis_rtt.py "$REDIS_URL" --seconds 2 >"$WORK/rtt.json"

echo "All gateways use one PostgreSQL 15 database (fsync=off) and one Redis. \"1 replica\" and \"redis\" are the"
echo "first Redis-backed replica (the others idle meanwhile), \"$REPLICAS replicas\" are all of them (one wrk each, at"
echo "once, requests/s summed), \"memory\" is one more replica without \`redis.url\` (in-memory limiter)."
echo "Keys: a fresh one per measurement, with limits $KEY_LIMITS (never reached), except"
echo "the \"(no key limits)\" rows: a key without limits never asks Redis, so those rows show the replicas alone."
echo "Requests: non-streamed chat, max_tokens=$TOKENS, ${DURATION} s per measurement; wrk runs on the same $(nproc)"
echo "CPUs as everything else. wrk's percentiles include its coordinated-omission correction."
echo
"$PY" benchmarks/replicas_table.py "$RESULTS" --rtt "$WORK/rtt.json"
[[ -z "$KEEP" ]] || echo "raw results and logs: $WORK" >&2
if ((${#FAILED[@]})); then
  echo
  echo "**FAILED measurements** (left out of the medians above; any non-2xx answer or socket error fails one):"
  for line in "${FAILED[@]}"; do echo "- $line"; done
  exit 1
fi
