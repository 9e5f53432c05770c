"""The database layer: migrations match the tables, keys and usage records round-trip, outages are spooled."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from somner.errors import Unauthorized
from somner.gateway.auth import Authenticator
from somner.gateway.keys import KeyRecord, KeyRights
from somner.gateway.usage import UsageRecorder
from somner.store.db import Database, StoreUnavailable, describe, sqlite_url
from somner.store.keys import KeyStore
from somner.store.tables import metadata
from somner.store.usage import UsageRecord, UsageStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path, database_url: str | None) -> Database:
    database = Database(database_url or sqlite_url(tmp_path / "test.db"))
    await database.migrate()
    return database


def _diff(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def test_migrations_build_exactly_the_declared_schema(db: Database) -> None:
    async with db.connect() as connection:
        assert await connection.run_sync(_diff) == []
    await db.migrate()  # idempotent
    await db.close()


async def test_keys_round_trip_without_their_secrets(db: Database) -> None:
    keys = KeyStore(db)
    record, secret = await keys.create_key("ann", KeyRights(models=frozenset({"m"}), rpm=5), create_user=True)
    found = await keys.find(secret)
    assert found is not None and found.id == record.id
    assert found.rights.rpm == 5 and found.rights.models == frozenset({"m"})
    assert await keys.find(secret + "x") is None
    assert await keys.find("not-a-key") is None
    listed = await keys.list_keys()
    assert [k.id for k in listed] == [record.id]
    assert not hasattr(listed[0], "secret_hash")
    await db.close()


def record(i: int, **extra: object) -> UsageRecord:
    return UsageRecord(
        record_id=f"r{i}",
        request_id=f"q{i}",
        time=dt.datetime.now(dt.UTC),
        user_name="u",
        key_id="k",
        model="m",
        dialect="openai",
        route="chat",
        status=200,
        prompt_tokens=2,
        completion_tokens=3,
        **extra,  # type: ignore[arg-type]
    )


async def test_usage_inserts_are_idempotent(db: Database) -> None:
    store = UsageStore(db)
    await store.insert([record(1), record(2)])
    await store.insert([record(2), record(3)])
    assert await store.count() == 3
    assert (await store.tokens_since(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))["k"] == 15
    await db.close()


class FlakyStore(UsageStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.down = False

    async def insert(self, records: list[UsageRecord]) -> None:
        if self.down:
            raise StoreUnavailable("down")
        await super().insert(records)


async def test_an_outage_spools_and_replays_without_loss_or_duplicates(db: Database, tmp_path: Path) -> None:
    store = FlakyStore(db)
    recorder = UsageRecorder(store, tmp_path / "spool.jsonl", interval=60)
    recorder.record(record(1))
    await recorder.flush()
    store.down = True
    for i in range(2, 6):
        recorder.record(record(i))
    await recorder.flush()
    assert await store.count() == 1
    spooled = [json.loads(line)["record_id"] for line in (tmp_path / "spool.jsonl").read_text().splitlines()]
    assert spooled == ["r2", "r3", "r4", "r5"]
    store.down = False
    recorder.record(record(6))
    await recorder.stop()  # flushes: replays the spool, then the new record
    assert await store.count() == 6
    assert not (tmp_path / "spool.jsonl").exists()
    await db.close()


async def test_processes_sharing_a_spool_take_turns(db: Database, tmp_path: Path) -> None:
    """Gateway processes of one data directory share the spool: one replays (read, insert, delete) while
    another's append waits, so the delete never takes records appended meanwhile."""
    spool = tmp_path / "spool.jsonl"
    down, up = FlakyStore(db), FlakyStore(db)
    down.down = True
    writer, replayer = UsageRecorder(down, spool, interval=60), UsageRecorder(up, spool, interval=60)
    writer.record(record(1))
    await writer.flush()
    async with replayer._spool_lock():  # a replay in progress elsewhere
        writer.record(record(2))
        appending = asyncio.create_task(writer.flush())
        await asyncio.sleep(0.2)
        assert not appending.done()
        assert [json.loads(line)["record_id"] for line in spool.read_text().splitlines()] == ["r1"]
        await replayer._replay_locked()
    await appending
    assert [json.loads(line)["record_id"] for line in spool.read_text().splitlines()] == ["r2"]
    await replayer.flush()
    assert await up.count() == 2 and not spool.exists()
    await db.close()


def test_urls_are_logged_without_passwords() -> None:
    assert (
        describe("postgresql+asyncpg://somner:hunter2@db:5432/somner")
        == "postgresql+asyncpg://somner:***@db:5432/somner"
    )
    assert describe("sqlite+aiosqlite:////data/somner.db") == "sqlite+aiosqlite:////data/somner.db"


class CountingKeyStore(KeyStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.lookups = 0

    async def find(self, secret: str) -> KeyRecord | None:
        self.lookups += 1
        return await super().find(secret)


async def test_a_busy_key_is_looked_up_once_when_its_cache_entry_expires(db: Database) -> None:
    keys = CountingKeyStore(db)
    record, secret = await keys.create_key("ann", KeyRights(), create_user=True)
    now = [0.0]
    auth = Authenticator(keys, cache_ttl=5.0, clock=lambda: now[0])
    principals = await asyncio.gather(*(auth.authenticate(secret) for _ in range(20)))
    assert {p.key_id for p in principals} == {record.id}
    assert keys.lookups == 1  # twenty requests at once, one query
    await auth.authenticate(secret)
    assert keys.lookups == 1  # cached
    now[0] = 6.0
    await asyncio.gather(*(auth.authenticate(secret) for _ in range(20)))
    assert keys.lookups == 2  # expired: looked up again, once
    with pytest.raises(Unauthorized):
        await asyncio.gather(*(auth.authenticate(secret + "x") for _ in range(5)))
    assert keys.lookups == 3
    await db.close()
