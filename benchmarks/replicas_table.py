"""The tables of benchmarks/replicas.sh: medians over rounds of its wrk results, in markdown.

    python benchmarks/replicas_table.py RESULTS.jsonl [--rtt RTT.json]

RESULTS.jsonl has one line per measurement, written by replicas.sh:
`{"bench": "throughput"|"redis_cost", "config": NAME, "round": N, "connections": C, "window": EVENTS|null,
"wrk": [WRK, ...]}`, one WRK object (benchmarks/wrk_post.lua's line) per wrk process that ran at once.

Per measurement: requests/s is the sum over its wrk processes; p50 and p99 are the worst (highest) of those
processes' own percentiles (wrk cannot merge histograms across processes); mean latency is request-weighted.
Each figure in a table is the median of that figure over the rounds whose measurement had no failure (a non-2xx
answer or a socket error); failed ones only count in the "failed rounds" column. `window` is the number of events
in the key's Redis requests window when the measurement ended (null where there is no Redis).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Measurement:
    bench: str
    config: str
    round: int
    connections: int
    processes: int
    requests: int
    rps: float
    p50_ms: float  # worst process
    p99_ms: float  # worst process
    mean_ms: float  # request-weighted
    failures: int  # non-2xx answers and socket errors
    window: int | None


def measurement(record: dict[str, Any]) -> Measurement:
    runs: list[dict[str, Any]] = record["wrk"]
    requests = sum(int(run["requests"]) for run in runs)
    return Measurement(
        bench=str(record["bench"]),
        config=str(record["config"]),
        round=int(record["round"]),
        connections=int(record["connections"]),
        processes=len(runs),
        requests=requests,
        rps=sum(int(run["requests"]) / (int(run["duration_us"]) / 1e6) for run in runs),
        p50_ms=max(int(run["p50_us"]) for run in runs) / 1000.0,
        p99_ms=max(int(run["p99_us"]) for run in runs) / 1000.0,
        mean_ms=sum(float(run["mean_us"]) * int(run["requests"]) for run in runs) / max(1, requests) / 1000.0,
        failures=sum(int(run["non2xx"]) + int(run["socket_errors"]) for run in runs),
        window=None if record.get("window") is None else int(record["window"]),
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians over the clean rounds of one configuration (None: every round failed)."""

    config: str
    rounds: int
    failed_rounds: int
    connections: int
    processes: int
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    window: float | None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summary(config: str, rows: list[Measurement]) -> Summary:
    clean = [row for row in rows if row.failures == 0]
    return Summary(
        config=config,
        rounds=len(rows),
        failed_rounds=len(rows) - len(clean),
        connections=rows[0].connections,
        processes=rows[0].processes,
        rps=median([row.rps for row in clean]),
        p50_ms=median([row.p50_ms for row in clean]),
        p99_ms=median([row.p99_ms for row in clean]),
        mean_ms=median([row.mean_ms for row in clean]),
        window=median([row.window for row in clean if row.window is not None]),
    )


def summaries(rows: list[Measurement], bench: str) -> dict[str, Summary]:
    """One summary per configuration of `bench`, in the order they were first measured (round 1's order)."""
    mine = [row for row in rows if row.bench == bench]
    configs = dict.fromkeys(row.config for row in sorted(mine, key=lambda row: row.round))
    return {config: summary(config, [row for row in mine if row.config == config]) for config in configs}


def num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def failed_text(item: Summary) -> str:
    return f"{item.failed_rounds} of {item.rounds}" + (" FAILED" if item.failed_rounds else "")


def throughput_table(found: dict[str, Summary]) -> list[str]:
    lines = [
        "| target | wrk processes × connections | requests/s | p50 ms | p99 ms | mean ms | Redis window at end "
        "| failed rounds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for item in found.values():
        split = "/".join(str(c) for c in spread(item.connections, item.processes))
        lines.append(
            f"| {item.config} | {item.processes} × {split} | {num(item.rps, 0)} | {num(item.p50_ms, 2)} "
            f"| {num(item.p99_ms, 2)} | {num(item.mean_ms, 2)} | {num(item.window, 0)} | {failed_text(item)} |"
        )
    ratios = []
    for name, many in found.items():
        count, _, rest = name.partition(" replicas")  # "3 replicas" or "3 replicas (no key limits)"
        one = found.get(f"1 replica{rest}")
        if count.isdigit() and one is not None and one.rps and many.rps:
            ratios.append(f"{name} / 1 replica{rest}: {many.rps / one.rps:.2f}× the requests/s.")
    return [*lines, "", *ratios] if ratios else lines


def redis_table(found: dict[str, Summary]) -> list[str]:
    lines = [
        "| limiter | connections | requests/s | p50 ms | p99 ms | mean ms | Redis window at end | failed rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for item in found.values():
        lines.append(
            f"| {item.config} | {item.connections} | {num(item.rps, 0)} | {num(item.p50_ms, 3)} "
            f"| {num(item.p99_ms, 3)} | {num(item.mean_ms, 3)} | {num(item.window, 0)} | {failed_text(item)} |"
        )
    memory, redis = found.get("memory"), found.get("redis")
    if memory is not None and redis is not None:
        pairs = [(memory.p50_ms, redis.p50_ms), (memory.p99_ms, redis.p99_ms), (memory.mean_ms, redis.mean_ms)]
        added = [None if a is None or b is None else b - a for a, b in pairs]
        ratio = f"{redis.rps / memory.rps:.2f}×" if redis.rps and memory.rps else "-"
        lines += [
            "",
            f"added by the Redis limiter: p50 {signed(added[0])} ms, p99 {signed(added[1])} ms, "
            f"mean {signed(added[2])} ms (difference of the medians; requests/s {ratio} of in-memory).",
        ]
    return lines


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def rtt_table(rtt: dict[str, Any]) -> list[str]:
    lines = ["| command (c=1, redis.asyncio) | samples | p50 µs | p99 µs | mean µs |", "|---|---:|---:|---:|---:|"]
    for name, value in rtt.items():
        if not isinstance(value, dict) or "p50_us" not in value:
            continue
        label = "PING" if name == "ping" else f"limiter reserve, {name.removeprefix('reserve_')} events in window"
        lines.append(f"| {label} | {value['n']} | {value['p50_us']} | {value['p99_us']} | {value['mean_us']} |")
    return lines


def spread(total: int, parts: int) -> list[int]:
    """`total` connections over `parts` wrk processes, as replicas.sh splits them (the first ones get the rest)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--rtt", type=Path, help="replicas_redis_rtt.py's JSON")
    args = parser.parse_args()
    lines_in = args.results.read_text().splitlines()
    rows = [measurement(json.loads(line)) for line in lines_in if line.strip()]
    if not rows:
        raise SystemExit("no measurements")
    rounds = max(row.round for row in rows)
    out = [f"Medians of {rounds} round(s). Latencies: worst wrk process's percentile; mean: request-weighted.", ""]
    throughput = summaries(rows, "throughput")
    if throughput:
        connections = next(iter(throughput.values())).connections
        title = f"### Throughput, non-streamed chat, c={connections} in total"
        out += [title, "", *throughput_table(throughput), ""]
    redis = summaries(rows, "redis_cost")
    if redis:
        out += ["### Cost of the Redis limiter, one replica", "", *redis_table(redis), ""]
    if args.rtt is not None and args.rtt.exists():
        out += ["### Redis round trips", "", *rtt_table(json.loads(args.rtt.read_text())), ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
