"""Usage records in the database: batched, idempotent inserts (by request id), summaries and pruning."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any, Literal

from sqlalchemy import Date, case, cast, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from somner.store import usage_report
from somner.store.db import Database, as_utc
from somner.store.tables import usage
from somner.store.usage_report import Bucket, Dimension

GroupBy = Literal["user", "key", "model", "day"]


@dataclass(slots=True)
class UsageRecord:
    record_id: str  # unique per record
    request_id: str | None
    time: dt.datetime
    user_name: str | None
    key_id: str | None
    model: str | None
    dialect: str
    route: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    disconnected: bool = False
    prompt_text: str | None = None
    completion_text: str | None = None

    def row(self) -> dict[str, Any]:
        # (Not dataclasses.asdict: it deep-copies every value, and this runs once per request.)
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UsageRecord:
        data = dict(row)
        data["time"] = as_utc(
            dt.datetime.fromisoformat(data["time"]) if isinstance(data["time"], str) else data["time"]
        )
        return cls(**data)


_FIELDS = tuple(f.name for f in fields(UsageRecord))


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, records: list[UsageRecord]) -> None:
        """Write a batch in one transaction; records already present (same request id) are skipped."""
        if not records:
            return
        statement: Any
        if self.db.is_sqlite:
            statement = sqlite.insert(usage).on_conflict_do_nothing(index_elements=["record_id"])
        elif self.db.url.startswith("postgresql"):
            statement = postgresql.insert(usage).on_conflict_do_nothing(index_elements=["record_id"])
        else:
            statement = insert(usage)
        async with self.db.connect() as connection:
            await connection.execute(statement, [r.row() for r in records])

    async def count(self) -> int:
        async with self.db.connect() as connection:
            return int((await connection.execute(select(func.count()).select_from(usage))).scalar() or 0)

    async def all(self) -> list[UsageRecord]:
        async with self.db.connect() as connection:
            rows = (await connection.execute(select(usage).order_by(usage.c.id))).mappings().all()
        return [UsageRecord.from_row({k: v for k, v in r.items() if k != "id"}) for r in rows]

    async def tokens_since(self, since: dt.datetime) -> dict[str, int]:
        """Tokens (prompt + completion) per key since `since`: to restore daily quotas after a restart."""
        total = func.sum(usage.c.prompt_tokens + usage.c.completion_tokens)
        query = (
            select(usage.c.key_id, total)
            .where(usage.c.time >= since, usage.c.key_id.is_not(None))
            .group_by(usage.c.key_id)
        )
        async with self.db.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {str(key): int(tokens or 0) for key, tokens in rows}

    async def summary(self, since: dt.datetime, by: GroupBy) -> list[dict[str, Any]]:
        column: Any = {
            "user": usage.c.user_name,
            "key": usage.c.key_id,
            "model": usage.c.model,
            "day": func.date(usage.c.time) if self.db.is_sqlite else cast(usage.c.time, Date),
        }[by]
        query = (
            select(
                column.label("group"),
                func.count().label("requests"),
                func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
                func.sum(usage.c.completion_tokens).label("completion_tokens"),
                func.sum(usage.c.cached_tokens).label("cached_tokens"),
                func.sum(case((usage.c.status >= 400, 1), else_=0)).label("errors"),
            )
            .where(usage.c.time >= since)
            .group_by(column)
            .order_by(column)
        )
        async with self.db.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [
            {
                by: str(r["group"]) if r["group"] is not None else None,
                "requests": int(r["requests"]),
                "prompt_tokens": int(r["prompt_tokens"] or 0),
                "completion_tokens": int(r["completion_tokens"] or 0),
                "cached_tokens": int(r["cached_tokens"] or 0),
                "errors": int(r["errors"] or 0),
            }
            for r in rows
        ]

    async def series(
        self, since: dt.datetime, bucket: Bucket, by: Dimension | None, key_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Requests, tokens, errors and latency per hour or day (and per key, model or user) since `since`; of
        one key only with `key_id`."""
        query = usage_report.series_query(since, bucket, by, sqlite=self.db.is_sqlite, key_id=key_id)
        async with self.db.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return usage_report.series_rows(rows, bucket, by)

    async def top(self, since: dt.datetime, by: Dimension, limit: int) -> list[dict[str, Any]]:
        """The keys (models, users) with the most requests since `since`, with their figures."""
        async with self.db.connect() as connection:
            rows = (await connection.execute(usage_report.top_query(since, by, limit))).mappings().all()
        return usage_report.top_rows(rows, by)

    async def errors(self, since: dt.datetime, limit: int, key_id: str | None = None) -> list[dict[str, Any]]:
        """The latest requests answered with an error (status 400 and above), newest first; of one key only
        with `key_id`."""
        async with self.db.connect() as connection:
            rows = (await connection.execute(usage_report.errors_query(since, limit, key_id))).mappings().all()
        return usage_report.error_rows(rows)

    async def forget_texts(self, before: dt.datetime) -> int:
        """Drop stored prompt and completion text older than `before` (log_retention_days)."""
        async with self.db.connect() as connection:
            result = await connection.execute(
                update(usage)
                .where(usage.c.time < before, usage.c.prompt_text.is_not(None) | usage.c.completion_text.is_not(None))
                .values(prompt_text=None, completion_text=None)
            )
        return int(result.rowcount or 0)
