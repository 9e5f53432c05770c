"""The Redis limiter against a real redis-server: the in-memory limiter's decisions, exact limits between
"replicas" (separate clients), concurrency leases that a killed holder cannot keep, and Redis outages."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator

import pytest

from somner.errors import Unavailable
from somner.gateway.keys import KeyRights
from somner.gateway.ratelimit import DAY, RateLimiter
from somner.gateway.ratelimit_redis import RedisLimiter
from tests.redis_server import RedisServer
from tests.servers import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


def limiter_for(server: RedisServer, prefix: str, **options: object) -> RedisLimiter:
    return RedisLimiter.from_url(server.url, prefix=prefix, **options)  # type: ignore[arg-type]


async def test_same_decisions_as_the_memory_limiter(redis_server: RedisServer) -> None:
    shared = limiter_for(redis_server, "same")
    local = RateLimiter()
    rights = KeyRights(rpm=4, tpm=60, daily_tokens=150)
    start = 20_000 * DAY + 100.0
    steps = [(0.0, 10), (1.0, 20), (2.0, 0), (3.0, 25), (4.0, 5), (5.0, 0), (30.0, 0), (61.5, 30), (62.0, 10)]
    steps += [(63.0, 40), (90.0, 0), (125.0, 20), (126.0, 0), (127.0, 0), (DAY, 0)]
    refused = 0
    try:
        for offset, tokens in steps:
            now = start + offset
            expected, expected_place = local.admit("k", rights, now)
            got, place = await shared.reserve("k", rights, now)
            assert (got.allowed, got.reason, got.code, got.headers) == (
                expected.allowed,
                expected.reason,
                expected.code,
                expected.headers,
            ), offset
            assert got.retry_after == pytest.approx(expected.retry_after, abs=1e-6), offset
            assert (place is None) == (expected_place is None)
            refused += not got.allowed
            if offset == 2.0 and place is not None and expected_place is not None:  # refused later: refunded
                local.refund(expected_place)
                await shared.cancel(place)
                continue
            if place is not None:
                local.charge("k", tokens, now)
                shared.settle("k", rights, tokens, now)
                await shared.drain()
        assert refused >= 3  # the sequence reaches each kind of limit
    finally:
        await shared.close()


async def test_replicas_share_one_limit_exactly(redis_server: RedisServer) -> None:
    replicas = [limiter_for(redis_server, "exact") for _ in range(3)]
    rights = KeyRights(rpm=30)
    now = time.time()
    try:
        verdicts = await asyncio.gather(*(replicas[i % 3].reserve("k", rights, now) for i in range(150)))
        assert sum(1 for verdict, _ in verdicts if verdict.allowed) == 30
        refused = [verdict for verdict, _ in verdicts if not verdict.allowed]
        assert all(v.headers["x-ratelimit-remaining-requests"] == "0" and v.retry_after > 59 for v in refused)
    finally:
        for replica in replicas:
            await replica.close()


async def test_tokens_and_daily_quota_are_shared(redis_server: RedisServer) -> None:
    a, b = limiter_for(redis_server, "tokens"), limiter_for(redis_server, "tokens")
    rights = KeyRights(tpm=100, daily_tokens=150)
    now = 30_000 * DAY + 10.0
    try:
        a.settle("k", rights, 100, now)
        await a.drain()
        refused, _ = await b.reserve("k", rights, now + 1)
        assert not refused.allowed and "tokens per minute" in refused.reason
        b.seed_daily("k", 160, now + 61)  # the usage records say more than Redis counted: Redis takes it
        await b.drain()
        quota, _ = await a.reserve("k", rights, now + 61)
        assert not quota.allowed and quota.code == "insufficient_quota"
        b.seed_daily("k", 10, now + 62)  # never lowers a count
        await b.drain()
        assert not (await a.reserve("k", rights, now + 62))[0].allowed
    finally:
        await a.close()
        await b.close()


async def test_concurrency_slots_are_shared(redis_server: RedisServer) -> None:
    a, b = limiter_for(redis_server, "slots"), limiter_for(redis_server, "slots")
    try:
        first = await a.hold("k", 2, 0.5)
        second = await b.hold("k", 2, 0.5)
        assert first is not None and second is not None
        with pytest.raises(Unavailable) as refused:
            await a.hold("k", 2, 0.2)
        assert refused.value.code == "queue_timeout"
        waiter = asyncio.create_task(b.hold("k", 2, 2.0))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        a.release(first)
        third = await waiter
        assert third is not None
    finally:
        await a.close()
        await b.close()


HOLDER = """
import asyncio, sys
from somner.gateway.ratelimit_redis import RedisLimiter

async def main() -> None:
    limiter = RedisLimiter.from_url(sys.argv[1], prefix="crash", lease_ttl=1.0)
    await limiter.hold("k", 2, 1.0)
    await limiter.hold("k", 2, 1.0)
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_killed_holder_cannot_keep_its_slots(redis_server: RedisServer) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, redis_server.url, stdout=asyncio.subprocess.PIPE
    )
    other = limiter_for(redis_server, "crash", lease_ttl=1.0)
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        with pytest.raises(Unavailable):  # renewed while the holder lives: still held after two TTLs
            await other.hold("k", 2, 2.0)
        holder.kill()
        await holder.wait()
        started = time.monotonic()
        assert await other.hold("k", 2, 3.0) is not None
        assert time.monotonic() - started < 1.5
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await other.close()


async def test_keys_without_limits_never_touch_redis() -> None:
    nowhere = RedisLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0", on_error="closed")
    try:
        verdict, place = await nowhere.reserve("k", KeyRights(), time.time())
        assert verdict.allowed and place is None
        nowhere.settle("k", KeyRights(), 100, time.time())
        await nowhere.drain()
        assert not nowhere.down
    finally:
        await nowhere.close()


async def test_closed_refuses_while_redis_is_down_and_recovers() -> None:
    server = RedisServer()
    server.start()
    limiter = RedisLimiter.from_url(server.url, prefix="closed", on_error="closed")
    rights = KeyRights(rpm=2)
    try:
        assert (await limiter.reserve("k", rights, time.time()))[0].allowed
        server.stop()
        for _ in range(3):
            with pytest.raises(Unavailable) as refused:
                await limiter.reserve("k", rights, time.time())
            assert refused.value.code == "limits_unavailable" and refused.value.headers["Retry-After"] == "5"
        with pytest.raises(Unavailable):
            await limiter.hold("k", 1, 0.5)
        server.start()  # same port, empty data
        results = [(await limiter.reserve("k", rights, time.time()))[0].allowed for _ in range(3)]
        assert results == [True, True, False]
        assert not limiter.down
    finally:
        await limiter.close()
        server.remove()


async def test_open_admits_while_down_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer()
    server.start()
    limiter = RedisLimiter.from_url(server.url, prefix="open", on_error="open")
    rights = KeyRights(rpm=1, max_concurrent=1)
    try:
        server.stop()
        with caplog.at_level(logging.WARNING, logger="somner.gateway.ratelimit_redis"):
            for _ in range(5):
                verdict, place = await limiter.reserve("k", rights, time.time())
                assert verdict.allowed and place is None
                assert await limiter.hold("k", 1, 0.1) is None
            server.start()
            assert (await limiter.reserve("k", rights, time.time()))[0].allowed
            assert not (await limiter.reserve("k", rights, time.time()))[0].allowed
        messages = [record.getMessage() for record in caplog.records]
        assert sum("unreachable" in m for m in messages) == 1, messages
        assert sum("reachable again" in m for m in messages) == 1, messages
    finally:
        await limiter.close()
        server.remove()


async def test_window_totals_follow_events_in_and_out(redis_server: RedisServer) -> None:
    limiter = limiter_for(redis_server, "totals")
    rights = KeyRights(rpm=1000)
    now = 40_000 * DAY + 5.0
    try:
        places = [(await limiter.reserve("k", rights, now + i * 0.01))[1] for i in range(300)]
        for place in places[:50]:
            assert place is not None
            await limiter.cancel(place)
        verdict, _ = await limiter.reserve("k", rights, now + 4)
        assert verdict.headers["x-ratelimit-remaining-requests"] == str(1000 - 251)
        # A lost running total is rebuilt from the events themselves.
        await limiter.client.delete(limiter._key("k", "requests:total"))
        verdict, _ = await limiter.reserve("k", rights, now + 5)
        assert verdict.headers["x-ratelimit-remaining-requests"] == str(1000 - 252)
        # Events leave the window (and the total) as they age out of the minute.
        verdict, _ = await limiter.reserve("k", rights, now + 60 + 1.505)  # the places taken up to 1.50s are gone
        assert verdict.headers["x-ratelimit-remaining-requests"] == str(1000 - (300 - 50 - 101 + 2) - 1)
        verdict, _ = await limiter.reserve("k", rights, now + 200)
        assert verdict.headers["x-ratelimit-remaining-requests"] == str(1000 - 1)
    finally:
        await limiter.close()
