"""Recording usage: exactly one record per admitted request, written in batches, never dropped.

Records are queued in memory and written in one transaction per batch. If the database cannot take them, the
batch is appended to a spool file (JSON lines) and replayed once the database answers again; replays are
idempotent (records carry their request id, and a present id is skipped). Stopping flushes everything: to the
database, or else to the spool, before the gateway acknowledges shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from somner.store.db import StoreUnavailable
from somner.store.usage import UsageRecord, UsageStore

log = logging.getLogger(__name__)

_SLICE = 100  # usage rows per INSERT statement


class UsageRecorder:
    def __init__(self, store: UsageStore, spool: Path, interval: float, batch_size: int = 500) -> None:
        self.store = store
        self.spool = spool
        self.interval = interval
        self.batch_size = batch_size
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.written = 0
        self.spooled = 0

    def record(self, record: UsageRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def start(self) -> None:
        await self.flush()  # replays a spool left by an earlier outage or shutdown
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):  # (not wait_for: in 3.11 it can swallow a cancel)
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            try:
                await self._replay()
                await self._insert(batch)
                self.written += len(batch)
            except StoreUnavailable as exc:
                if batch:
                    log.warning(
                        "database unavailable (%s); spooling %d usage records to %s", exc, len(batch), self.spool
                    )
                    async with self._spool_lock():
                        self._append(batch)

    def _append(self, batch: list[UsageRecord]) -> None:
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with self.spool.open("a", encoding="utf-8") as out:
            for record in batch:
                row = record.row()
                row["time"] = record.time.isoformat()
                out.write(json.dumps(row) + "\n")
            out.flush()
        self.spooled += len(batch)

    @contextlib.asynccontextmanager
    async def _spool_lock(self) -> AsyncIterator[None]:
        """The spool file is shared by the gateway processes of one data directory (`workers`): one at a time
        appends to it or replays it, so that no process deletes records another appended meanwhile."""
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.spool.with_name(self.spool.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)  # (off the event loop: another may hold it)
            yield
        finally:
            os.close(fd)  # which releases the lock

    async def _replay(self) -> None:
        if not self.spool.exists():
            return
        async with self._spool_lock():
            await self._replay_locked()

    async def _replay_locked(self) -> None:
        if not self.spool.exists():
            return  # another process replayed it first
        lines = self.spool.read_text(encoding="utf-8").splitlines()
        records = []
        for line in lines:
            try:
                records.append(UsageRecord.from_row(json.loads(line)))
            except (ValueError, TypeError):
                log.error("skipping an unreadable spooled usage record")
        await self._insert(records)
        self.spool.unlink()
        if records:
            log.info("replayed %d spooled usage records", len(records))
            self.written += len(records)

    async def _insert(self, records: list[UsageRecord]) -> None:
        """Insert in slices: the rows of one statement are prepared on the event loop, and a few hundred at once
        would hold up every request in flight for tens of milliseconds. (Inserts are idempotent by record id, so
        a slice written before an outage is not written twice when the batch is spooled and replayed.)"""
        for start in range(0, len(records), _SLICE):
            await self.store.insert(records[start : start + _SLICE])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
