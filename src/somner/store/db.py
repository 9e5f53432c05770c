"""The database: an async SQLAlchemy engine for SQLite (default, WAL mode) or PostgreSQL (asyncpg), migrated
with Alembic when opened. SQLAlchemy's exceptions are translated where they enter (`StoreUnavailable`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 7_461_823_914  # a PostgreSQL advisory lock id: replicas starting together migrate one at a time


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or refused an operation."""


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def describe(url: str) -> str:
    """A URL for logs: the password never appears."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}:***@{tail}"


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        options: dict[str, Any] = {"pool_pre_ping": True}
        if not self.is_sqlite:
            options.update(pool_size=10, max_overflow=20, pool_recycle=1800)
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction (committed at the end); database failures become StoreUnavailable."""
        try:
            async with self.engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"database error: {exc.__class__.__name__}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"database unreachable: {exc}") from exc

    async def migrate(self) -> None:
        """Bring the schema to the newest revision."""
        async with self.connect() as connection:
            if not self.is_sqlite:
                await connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            await connection.run_sync(_upgrade)
        log.info("database ready: %s", describe(self.url))

    async def ping(self) -> bool:
        try:
            async with self.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except StoreUnavailable:
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
