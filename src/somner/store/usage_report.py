"""Usage over time, aggregated in the database: series per hour or day (per key or model), the top keys or
models, the latest errors. These feed the console's usage page and its CSV export.

Every query is bounded by time first, so it runs on `ix_usage_time_report` (time, then the grouped columns and
the summed figures: the index alone answers it, the table rows are never read) and its cost grows with the
window asked for, not with the table. Buckets are UTC. On SQLite `time` is stored as ISO text
(`YYYY-MM-DD HH:MM:SS...`), so a bucket is a prefix of it; on PostgreSQL it is `date_trunc` in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import Select, case, desc, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from somner.store.db import as_utc
from somner.store.tables import usage

Bucket = Literal["hour", "day"]
Dimension = Literal["key", "model", "user"]

_PREFIX = {"hour": 13, "day": 10}  # characters of "YYYY-MM-DD HH" and "YYYY-MM-DD"


def _dimension(by: Dimension) -> ColumnElement[Any]:
    # Grouped as an expression (NULL as ""), not the bare column: SQLite would otherwise group along
    # ix_usage_key_time and look every row up in the table, several times slower than the covering index.
    column = {"key": usage.c.key_id, "model": usage.c.model, "user": usage.c.user_name}[by]
    return func.coalesce(column, "")


def _group(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def bucket_column(bucket: Bucket, *, sqlite: bool) -> ColumnElement[Any]:
    if sqlite:
        return func.substr(usage.c.time, 1, _PREFIX[bucket])
    return func.date_trunc(bucket, func.timezone("UTC", usage.c.time))


def bucket_label(value: Any, bucket: Bucket) -> str:
    """A bucket as ISO 8601 in UTC: `2026-12-06T14:00:00Z` (hour) or `2026-12-06` (day)."""
    text = value.strftime("%Y-%m-%d %H") if isinstance(value, dt.datetime) else str(value)
    return text[:10] if bucket == "day" else f"{text[:10]}T{text[11:13]}:00:00Z"


def _figures() -> list[ColumnElement[Any]]:
    return [
        func.count().label("requests"),
        func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
        func.sum(usage.c.completion_tokens).label("completion_tokens"),
        func.sum(case((usage.c.status >= 400, 1), else_=0)).label("errors"),
        func.avg(usage.c.latency_ms).label("avg_latency_ms"),
        func.avg(usage.c.ttft_ms).label("avg_ttft_ms"),
    ]


def _figures_json(row: Any) -> dict[str, Any]:
    return {
        "requests": int(row["requests"]),
        "prompt_tokens": int(row["prompt_tokens"] or 0),
        "completion_tokens": int(row["completion_tokens"] or 0),
        "errors": int(row["errors"] or 0),
        "avg_latency_ms": round(float(row["avg_latency_ms"]), 1) if row["avg_latency_ms"] is not None else None,
        "avg_ttft_ms": round(float(row["avg_ttft_ms"]), 1) if row["avg_ttft_ms"] is not None else None,
    }


def series_query(
    since: dt.datetime, bucket: Bucket, by: Dimension | None, *, sqlite: bool, key_id: str | None = None
) -> Select[Any]:
    """`key_id`: one key's records only (a user's own usage)."""
    column = bucket_column(bucket, sqlite=sqlite).label("bucket")
    group = _dimension(by).label("group") if by is not None else literal(None).label("group")
    query = select(column, group, *_figures()).where(usage.c.time >= since).group_by(column)
    if key_id is not None:
        query = query.where(usage.c.key_id == key_id)
    if by is not None:
        query = query.group_by(group)
    return query.order_by(column)


def series_rows(rows: Any, bucket: Bucket, by: Dimension | None) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item: dict[str, Any] = {"bucket": bucket_label(row["bucket"], bucket)}
        if by is not None:
            item[by] = _group(row["group"])
        item.update(_figures_json(row))
        out.append(item)
    return out


def top_query(since: dt.datetime, by: Dimension, limit: int) -> Select[Any]:
    column = _dimension(by).label("group")
    return (
        select(column, *_figures())
        .where(usage.c.time >= since)
        .group_by(column)
        .order_by(desc("requests"), column)
        .limit(limit)
    )


def top_rows(rows: Any, by: Dimension) -> list[dict[str, Any]]:
    return [{by: _group(r["group"]), **_figures_json(r)} for r in rows]


def errors_query(since: dt.datetime, limit: int, key_id: str | None = None) -> Select[Any]:
    query = (
        select(
            usage.c.time,
            usage.c.request_id,
            usage.c.key_id,
            usage.c.user_name,
            usage.c.model,
            usage.c.route,
            usage.c.status,
            usage.c.latency_ms,
        )
        .where(usage.c.time >= since, usage.c.status >= 400)
        .order_by(usage.c.time.desc())
        .limit(limit)
    )
    return query.where(usage.c.key_id == key_id) if key_id is not None else query


def error_rows(rows: Any) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        moment = r["time"]
        moment = as_utc(dt.datetime.fromisoformat(moment) if isinstance(moment, str) else moment)
        out.append(
            {
                "time": moment.isoformat() if moment is not None else None,
                "request_id": r["request_id"],
                "key_id": r["key_id"],
                "user": r["user_name"],
                "model": r["model"],
                "route": r["route"],
                "status": int(r["status"]),
                "latency_ms": round(float(r["latency_ms"]), 1),
            }
        )
    return out
