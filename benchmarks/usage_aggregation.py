"""How fast the console's usage queries are on a large usage table (a measurement, not a test).

Creates a SQLite database with Somner's schema (the real migrations), inserts N usage rows (default 1,000,000)
spread over the last D days (default 30) across K keys and M models, then times each query the usage page makes:
the hourly and daily series (overall, per key, per model) for the last 24 hours and 7 days, the top keys, the latest
errors. Reports the median of several runs of each, and the query plan of the slowest, so an index that stops
being used shows up here.

    .venv/bin/python benchmarks/usage_aggregation.py [--rows 1000000] [--days 30] [--runs 5] [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from somner.store.db import Database, sqlite_url
from somner.store.tables import usage
from somner.store.usage import UsageStore
from somner.store.usage_report import series_query


def fake_rows(count: int, days: int, keys: int, models: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    span = days * 86400
    rows = []
    for i in range(count):
        status = 200 if rng.random() > 0.02 else rng.choice((400, 429, 500))
        rows.append(
            {
                "record_id": f"{i:032x}",
                "request_id": f"req-{i}",
                "time": now - dt.timedelta(seconds=rng.random() * span),
                "user_name": f"user-{rng.randrange(keys)}",
                "key_id": f"key{rng.randrange(keys):05d}",
                "model": f"model-{rng.randrange(models)}",
                "dialect": "openai",
                "route": "/v1/chat/completions",
                "status": status,
                "prompt_tokens": rng.randrange(10, 2000),
                "completion_tokens": rng.randrange(1, 500),
                "cached_tokens": 0,
                "ttft_ms": rng.uniform(20, 400),
                "latency_ms": rng.uniform(100, 8000),
                "bytes_in": 500,
                "bytes_out": 2000,
                "disconnected": False,
            }
        )
    return rows


async def fill(db: Database, rows: int, days: int, keys: int, models: int) -> float:
    started = time.perf_counter()
    batch = 50_000
    for start in range(0, rows, batch):
        chunk = fake_rows(min(batch, rows - start), days, keys, models, seed=start)
        for offset, row in enumerate(chunk):
            row["record_id"] = f"{start + offset:032x}"
        async with db.connect() as connection:
            await connection.execute(usage.insert(), chunk)
    return time.perf_counter() - started


async def timed(runs: int, query: Callable[[], Awaitable[object]]) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await query()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", type=Path, help="an existing benchmark database to reuse (else a new temporary one)")
    args = parser.parse_args()

    path = args.db or Path(tempfile.mkdtemp(prefix="somner-usage-bench-")) / "somner.db"
    db = Database(sqlite_url(path))
    await db.migrate()
    store = UsageStore(db)
    present = await store.count()
    if present < args.rows:
        seconds = await fill(db, args.rows - present, args.days, args.keys, args.models)
        print(f"inserted {args.rows - present:,} rows in {seconds:.1f}s into {path}")
    async with db.connect() as connection:
        await connection.execute(text("ANALYZE"))
    total = await store.count()
    print(f"usage rows: {total:,} over {args.days} days, {args.keys} keys, {args.models} models; median of {args.runs}")

    now = dt.datetime.now(dt.UTC)
    day, week = now - dt.timedelta(days=1), now - dt.timedelta(days=7)
    cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("series hour, 24h, all", lambda: store.series(day, "hour", None)),
        ("series hour, 24h, per key", lambda: store.series(day, "hour", "key")),
        ("series hour, 24h, per model", lambda: store.series(day, "hour", "model")),
        ("series day, 7d, all", lambda: store.series(week, "day", None)),
        ("series day, 7d, per key", lambda: store.series(week, "day", "key")),
        ("series day, 7d, per model", lambda: store.series(week, "day", "model")),
        ("top 10 keys, 7d", lambda: store.top(week, "key", 10)),
        ("top models, 24h", lambda: store.top(day, "model", 20)),
        ("latest 20 errors, 7d", lambda: store.errors(week, 20)),
    ]
    for name, query in cases:
        print(f"{name:32s} {await timed(args.runs, query):9.1f} ms")

    compiled = series_query(week, "day", "model", sqlite=True).compile(compile_kwargs={"literal_binds": True})
    async with db.connect() as connection:
        plan = (await connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
    print("plan of 'series day, 7d, per model':", "; ".join(str(row[-1]) for row in plan))
    await db.close()


if __name__ == "__main__":
    asyncio.run(main())
