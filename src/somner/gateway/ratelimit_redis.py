"""Rate limits, quotas and per-key concurrency shared by several replicas through Redis.

The decisions are `ratelimit`'s: the same sliding windows (requests and tokens per minute) and UTC-day token
count, read into a `Snapshot` and judged by `verdict_of`. Each check-and-reserve is one Lua script, so it is
atomic across replicas: N replicas admit exactly `rpm` requests a minute between them. A key's Redis keys share a
hash tag (`{key_id}`), so the scripts also work on a Redis Cluster.

Windows are sorted sets scored by the caller's wall clock (replicas need synchronised clocks; skew shifts a
window's edge by as much). Concurrency slots are leases scored by Redis's own clock: a replica renews the leases of
its running requests every `lease_ttl / 3`, and a lease it stops renewing (a crashed replica) expires after
`lease_ttl`, so no slot leaks.

When Redis cannot be reached, `on_error` decides: "closed" refuses keys that have limits with a 503
(`limits_unavailable`), "open" admits them unchecked. Either way the outage is logged once, its end once, and the
next command after Redis returns simply works (no restart). Tokens charged during an outage are lost. Keys
without any limit never touch Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any, Literal

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from somner.errors import Unavailable
from somner.gateway.keys import KeyRights
from somner.gateway.ratelimit import DAY, MINUTE, Lease, Reservation, Snapshot, Verdict, has_limits, verdict_of

log = logging.getLogger(__name__)

OnError = Literal["closed", "open"]
POLL_SECONDS = 0.05  # between tries for a concurrency slot held elsewhere

# A window is a sorted set of events (member "<id>:<amount>", scored by time) plus its running total in a string
# key beside it, so that a decision costs the events that leave the window, not all the events in it (a busy key
# holds thousands). The total is rebuilt from the set if it is missing (it expires with the set, idle for a span).
_WINDOW = """
local function amount(member)
  return tonumber(string.match(member, ':(%d+)$'))
end
local function window(key, total_key, now, span)
  local edge = now - span
  local total = tonumber(redis.call('GET', total_key) or '-1')
  if total < 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', edge)
    total = 0
    for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do total = total + amount(member) end
  else
    local gone = redis.call('ZRANGEBYSCORE', key, '-inf', edge)
    if #gone > 0 then
      for _, member in ipairs(gone) do total = total - amount(member) end
      redis.call('ZREMRANGEBYSCORE', key, '-inf', edge)
    end
  end
  return total
end
local function keep(key, total_key, total, span)
  local ttl = math.ceil(span * 1000) + 1000
  redis.call('SET', total_key, total, 'PX', ttl)
  redis.call('PEXPIRE', key, ttl)
end
-- Seconds until the total drops below `limit` (ratelimit.Window.free_at; under the limit: until the oldest event
-- leaves). Walks from the oldest event only as far as the excess goes: one event while under the limit.
local function free_at(key, total, limit, now, span)
  if limit < 0 then return 0 end
  local excess = total - limit + 1
  local start, count = 0, 8
  while true do
    local events = redis.call('ZRANGE', key, start, start + count - 1, 'WITHSCORES')
    if #events == 0 then return 0 end
    for i = 1, #events, 2 do
      excess = excess - amount(events[i])
      if excess <= 0 then return math.max(0, tonumber(events[i + 1]) + span - now) end
    end
    start, count = start + count, 64
  end
end
"""

# KEYS: requests window, its total, tokens window, its total, today's tokens. ARGV: now, span, rpm, tpm, daily
# (-1: none), member. Returns {admitted, requests, requests_free_at, tokens, tokens_free_at, day_tokens}, as strings.
RESERVE = (
    _WINDOW
    + """
local now, span = tonumber(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, daily = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local requests = window(KEYS[1], KEYS[2], now, span)
local tokens = window(KEYS[3], KEYS[4], now, span)
local day_tokens = tonumber(redis.call('GET', KEYS[5]) or '0')
local admitted = (rpm < 0 or requests < rpm) and (tpm < 0 or tokens < tpm) and (daily < 0 or day_tokens < daily)
local requests_free = free_at(KEYS[1], requests, rpm, now, span)
local tokens_free = free_at(KEYS[3], tokens, tpm, now, span)
if admitted then
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  keep(KEYS[1], KEYS[2], requests + 1, span)
else
  keep(KEYS[1], KEYS[2], requests, span)
end
keep(KEYS[3], KEYS[4], tokens, span)
return {admitted and 1 or 0, tostring(requests), tostring(requests_free), tostring(tokens), tostring(tokens_free),
        tostring(day_tokens)}
"""
)

# KEYS: tokens window, its total, today's tokens. ARGV: now, span, member (ending in ":tokens"), tokens, day TTL (s).
CHARGE = (
    _WINDOW
    + """
local now, span = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens = window(KEYS[1], KEYS[2], now, span)
redis.call('ZADD', KEYS[1], now, ARGV[3])
keep(KEYS[1], KEYS[2], tokens + tonumber(ARGV[4]), span)
redis.call('INCRBY', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return 1
"""
)

# KEYS: requests window, its total. ARGV: the member of a reservation given back. Its place frees at once.
CANCEL = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local total = tonumber(redis.call('GET', KEYS[2]) or '-1')
  if total > 0 then redis.call('SET', KEYS[2], total - 1, 'KEEPTTL') end
end
return 1
"""

# KEYS: today's tokens. ARGV: tokens used today per the usage records, TTL (s). Never lowers what Redis counted.
SEED = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
"""

# KEYS: the key's leases. ARGV: limit, member, lease TTL (ms). 1 when a slot was taken. Redis's clock.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 1000)
return 1
"""

# KEYS: lease sets, one per lease. ARGV: lease TTL (ms), then one member per key. Only leases still held move.
RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('ZADD', key, 'XX', 'CH', expiry, ARGV[i + 1]) == 1 then
    redis.call('PEXPIRE', key, tonumber(ARGV[1]) + 1000)
  end
end
return 1
"""


class RedisLimiter:
    """A `Limiter` whose counters live in Redis, shared by every replica that uses the same `prefix`."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "somner",
        on_error: OnError = "closed",
        lease_ttl: float = 30.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.on_error = on_error
        self.lease_ttl = lease_ttl
        self.down = False  # in an outage (logged once when it starts, once when it ends)
        self._reserve = client.register_script(RESERVE)
        self._charge = client.register_script(CHARGE)
        self._cancel = client.register_script(CANCEL)
        self._seed = client.register_script(SEED)
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._leases: set[Lease] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # charges, releases, seeds in flight

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "somner",
        on_error: OnError = "closed",
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        lease_ttl: float = 30.0,
        max_connections: int = 128,
    ) -> RedisLimiter:
        """A client that fails fast: one retry (a pooled connection that died with a Redis restart), no backoff.
        Its pool holds up to `max_connections`; a command beyond them waits up to `timeout` for one (redis-py's
        default pool would raise at once, which would read as an outage under a burst)."""
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        return cls(Redis.from_pool(pool), prefix=prefix, on_error=on_error, lease_ttl=lease_ttl)  # (owns the pool)

    def _key(self, key_id: str, what: str) -> str:
        return f"{self.prefix}:{{{key_id}}}:{what}"

    def _window_keys(self, key_id: str, what: str) -> list[str]:
        """A window's events and its running total."""
        return [self._key(key_id, what), self._key(key_id, f"{what}:total")]

    def _day_key(self, key_id: str, now: float) -> str:
        return self._key(key_id, f"day:{int(now // DAY)}")

    def _failed(self, error: BaseException) -> None:
        if not self.down:
            self.down = True
            if self.on_error == "closed":
                log.warning("Redis is unreachable (%s): refusing requests of keys with limits until it returns", error)
            else:
                log.warning("Redis is unreachable (%s): admitting requests without checking limits", error)

    def _worked(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis is reachable again: limits are enforced")

    def _refuse(self) -> Unavailable:
        return Unavailable(
            "Rate limits cannot be checked right now; retry shortly.",
            code="limits_unavailable",
            headers={"Retry-After": "5"},
        )

    async def reserve(self, key_id: str, rights: KeyRights, now: float) -> tuple[Verdict, Reservation | None]:
        if not has_limits(rights):
            return Verdict(True), None
        member = f"{uuid.uuid4().hex}:1"

        def limit(value: int | None) -> int:
            return -1 if value is None else value

        keys = [
            *self._window_keys(key_id, "requests"),
            *self._window_keys(key_id, "tokens"),
            self._day_key(key_id, now),
        ]
        args: list[str | int] = [
            repr(now),
            repr(MINUTE),
            limit(rights.rpm),
            limit(rights.tpm),
            limit(rights.daily_tokens),
            member,
        ]
        try:
            reply = await self._reserve(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            if self.on_error == "closed":
                raise self._refuse() from exc
            return Verdict(True), None
        self._worked()
        admitted, requests, requests_free, tokens, tokens_free, day_tokens = reply
        snapshot = Snapshot(
            requests=int(float(requests)),
            requests_free_at=float(requests_free),
            tokens=int(float(tokens)),
            tokens_free_at=float(tokens_free),
            day_tokens=int(float(day_tokens)),
        )
        verdict = verdict_of(snapshot, rights, now)
        if verdict.allowed != bool(int(admitted)):  # cannot happen while the script and verdict_of agree
            raise AssertionError("the Redis limiter and ratelimit.verdict_of disagree")
        return verdict, Reservation(key_id, now, member) if verdict.allowed else None

    async def cancel(self, reservation: Reservation) -> None:
        try:
            await self._cancel(keys=self._window_keys(reservation.key_id, "requests"), args=[reservation.member])
        except (RedisError, OSError) as exc:
            self._failed(exc)  # the place stays taken until it slides out of the window
        else:
            self._worked()

    def settle(self, key_id: str, rights: KeyRights, tokens: int, now: float) -> None:
        if tokens <= 0 or not has_limits(rights):
            return
        keys = [*self._window_keys(key_id, "tokens"), self._day_key(key_id, now)]
        args: list[str | int] = [repr(now), repr(MINUTE), f"{uuid.uuid4().hex}:{tokens}", tokens, int(2 * DAY)]
        self._in_background(self._charge(keys=keys, args=args))

    def seed_daily(self, key_id: str, tokens: int, now: float) -> None:
        if tokens > 0:
            self._in_background(self._seed(keys=[self._day_key(key_id, now)], args=[tokens, int(2 * DAY)]))

    async def hold(self, key_id: str, limit: int, wait: float) -> Lease | None:
        """A slot among the key's `limit`, waiting up to `wait` seconds; 503 queue_timeout when none frees in time."""
        lease = Lease(key_id, uuid.uuid4().hex)
        key = self._key(key_id, "leases")
        deadline = time.monotonic() + wait
        while True:
            try:
                taken = await self._acquire(keys=[key], args=[limit, lease.member, round(self.lease_ttl * 1000)])
            except (RedisError, OSError) as exc:
                self._failed(exc)
                if self.on_error == "closed":
                    raise self._refuse() from exc
                return None
            self._worked()
            if int(taken):
                self._leases.add(lease)
                if self._renewer is None or self._renewer.done():
                    self._renewer = asyncio.create_task(self._renew_leases(), name="redis-lease-renewal")
                return lease
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"The server is busy: no turn within {wait:g}s.",
                    code="queue_timeout",
                    headers={"Retry-After": "5"},
                )
            await asyncio.sleep(POLL_SECONDS)

    def release(self, lease: Lease) -> None:
        self._leases.discard(lease)
        self._in_background(self.client.zrem(self._key(lease.key_id, "leases"), lease.member))

    async def _renew_leases(self) -> None:
        while self._leases:
            await asyncio.sleep(self.lease_ttl / 3)
            leases = list(self._leases)
            if not leases:
                break
            keys = [self._key(lease.key_id, "leases") for lease in leases]
            args: list[str | int] = [round(self.lease_ttl * 1000), *(lease.member for lease in leases)]
            try:
                await self._renew(keys=keys, args=args)
            except (RedisError, OSError) as exc:
                self._failed(exc)
            else:
                self._worked()

    def _in_background(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await work
            except (RedisError, OSError) as exc:
                self._failed(exc)
            else:
                self._worked()

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, wait: float = 5.0) -> None:
        """Waits (up to `wait` seconds) for the charges, releases and seeds already handed to the background."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=wait)

    async def close(self) -> None:
        """Waits for charges and releases in flight, stops renewing, closes the connections."""
        await self.drain()
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        await self.client.aclose()
