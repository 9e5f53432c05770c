"""The usage report's aggregations (`store/usage_report.py`) on SQLite and PostgreSQL: UTC buckets by hour and day,
split by key or model, the busiest first, the latest errors; and the queries read the covering index."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from somner.store.db import Database, sqlite_url
from somner.store.usage import UsageRecord, UsageStore
from somner.store.usage_report import series_query, top_query

pytestmark = pytest.mark.anyio

NOW = dt.datetime.now(dt.UTC).replace(minute=30, second=0, microsecond=0)
HOUR_AGO = NOW - dt.timedelta(hours=1)
DAYS_AGO = NOW - dt.timedelta(days=3)


@pytest.fixture
async def store(tmp_path: Path, database_url: str | None) -> AsyncIterator[UsageStore]:
    db = Database(database_url or sqlite_url(tmp_path / "report.db"))
    await db.migrate()
    usage = UsageStore(db)
    rows = [
        (NOW, "k1", "m1", 200, 100.0, 10.0),
        (NOW, "k1", "m2", 200, 300.0, None),
        (NOW, "k2", "m1", 429, 1.0, None),
        (HOUR_AGO, "k1", "m1", 200, 200.0, 20.0),
        (DAYS_AGO, None, "m1", 500, 50.0, None),
    ]
    await usage.insert(
        [
            UsageRecord(
                record_id=f"r{i}",
                request_id=f"q{i}",
                time=moment,
                user_name="u",
                key_id=key,
                model=model,
                dialect="openai",
                route="/v1/chat/completions",
                status=status,
                prompt_tokens=2,
                completion_tokens=3 if status == 200 else 0,
                latency_ms=latency,
                ttft_ms=ttft,
            )
            for i, (moment, key, model, status, latency, ttft) in enumerate(rows)
        ]
    )
    yield usage
    await db.close()


def hour(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:00:00Z")


async def test_hourly_series_overall_and_per_key(store: UsageStore) -> None:
    overall = await store.series(NOW - dt.timedelta(hours=24), "hour", None)
    assert [(r["bucket"], r["requests"], r["errors"]) for r in overall] == [(hour(HOUR_AGO), 1, 0), (hour(NOW), 3, 1)]
    latest = overall[-1]
    assert latest["prompt_tokens"] == 6 and latest["completion_tokens"] == 6
    assert latest["avg_latency_ms"] == pytest.approx(133.7, abs=0.1) and latest["avg_ttft_ms"] == 10.0
    per_key = await store.series(NOW - dt.timedelta(hours=24), "hour", "key")
    assert [(r["bucket"], r["key"], r["requests"]) for r in per_key] == [
        (hour(HOUR_AGO), "k1", 1),
        (hour(NOW), "k1", 2),
        (hour(NOW), "k2", 1),
    ]


async def test_daily_series_per_model_with_records_without_a_key(store: UsageStore) -> None:
    daily = await store.series(NOW - dt.timedelta(days=7), "day", "model")
    assert sum(r["requests"] for r in daily) == 5
    assert {r["bucket"] for r in daily} >= {DAYS_AGO.strftime("%Y-%m-%d"), NOW.strftime("%Y-%m-%d")}
    per_key = await store.series(NOW - dt.timedelta(days=7), "day", "key")
    assert [r["key"] for r in per_key if r["bucket"] == DAYS_AGO.strftime("%Y-%m-%d")] == [None]


async def test_top_and_errors(store: UsageStore) -> None:
    top = await store.top(NOW - dt.timedelta(days=7), "key", 10)
    assert [(r["key"], r["requests"]) for r in top] == [("k1", 3), (None, 1), ("k2", 1)]
    assert [r["model"] for r in await store.top(NOW - dt.timedelta(hours=24), "model", 1)] == ["m1"]
    errors = await store.errors(NOW - dt.timedelta(days=7), 10)
    assert [(e["status"], e["key_id"]) for e in errors] == [(429, "k2"), (500, None)]
    assert errors[0]["time"].startswith(NOW.strftime("%Y-%m-%dT%H"))
    assert await store.errors(NOW - dt.timedelta(hours=24), 10) == [e for e in errors if e["status"] == 429]


async def test_sqlite_answers_from_the_covering_index(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "plan.db"))
    await db.migrate()
    since = NOW - dt.timedelta(days=7)
    for query in (series_query(since, "day", "model", sqlite=True), top_query(since, "key", 10)):
        compiled = query.compile(compile_kwargs={"literal_binds": True})
        async with db.connect() as connection:
            plan = " ".join(str(row[-1]) for row in (await connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))))
        assert "COVERING INDEX ix_usage_time_report" in plan, plan
    await db.close()
