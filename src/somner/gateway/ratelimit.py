"""Per-key rate limits and quotas: requests per minute, tokens per minute, tokens per UTC day.

The arithmetic is pure (sliding windows over (time, amount) events, time passed in); `RateLimiter` keeps one
key's windows in memory and decides with no await between checking and reserving, so limits are exact under
concurrency in one process. (Several replicas share these counters through Redis instead.)

A request is checked and reserves its place in the requests-per-minute window when it arrives; if it is then
refused for concurrency (queue full or timed out), the reservation is refunded. Tokens are charged when the
request ends, with the counts of its real generation.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from somner.gateway.keys import KeyRights

MINUTE = 60.0
DAY = 86400.0


def reset_text(seconds: float) -> str:
    """OpenAI's spelling of a reset time: 850ms, 12s, 1m30s, 2h3m."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if minutes else ""
    text += f"{secs}s" if secs or not text else ""
    return text


@dataclass
class Window:
    """Amounts within the last `span` seconds."""

    span: float
    events: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def prune(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - self.span:
            self.total -= self.events.popleft()[1]

    def sum(self, now: float) -> int:
        self.prune(now)
        return self.total

    def add(self, now: float, amount: int) -> None:
        self.events.append((now, amount))
        self.total += amount

    def remove(self, when: float, amount: int) -> None:
        try:
            self.events.remove((when, amount))
            self.total -= amount
        except ValueError:
            pass  # already slid out of the window

    def free_at(self, now: float, limit: int) -> float:
        """Seconds until the window's total drops below `limit`."""
        self.prune(now)
        excess = self.total - limit + 1
        for when, amount in self.events:
            excess -= amount
            if excess <= 0:
                return max(0.0, when + self.span - now)
        return 0.0


@dataclass
class KeyCounters:
    requests: Window = field(default_factory=lambda: Window(MINUTE))
    tokens: Window = field(default_factory=lambda: Window(MINUTE))
    day: int = -1
    day_tokens: int = 0

    def today(self, now: float) -> int:
        day = int(now // DAY)
        if day != self.day:
            self.day, self.day_tokens = day, 0
        return self.day_tokens


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "rate_limit_exceeded"  # "insufficient_quota" for a used-up daily quota (OpenAI's code)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A request's place in its key's requests-per-minute window, given back if the request is refused later."""

    key_id: str
    when: float
    member: str = ""  # the event's name in Redis (unused in memory)


@dataclass(frozen=True, slots=True)
class Lease:
    """One of a key's `max_concurrent` slots shared by all replicas (Redis), held until `release`."""

    key_id: str
    member: str


class Limiter(Protocol):
    """What the gateway asks of a limiter, in memory (`RateLimiter`) or shared through Redis (`RedisLimiter`).

    `reserve` checks and takes a place atomically; `settle` and `release` never block the caller (a shared
    limiter finishes them in the background, and `close` waits for them). `hold` takes one of a key's
    `max_concurrent` slots across replicas, waiting up to `wait` seconds (None: nothing to hold, e.g. in one
    process, where the fair queue already bounds a key's concurrency).
    """

    async def reserve(self, key_id: str, rights: KeyRights, now: float) -> tuple[Verdict, Reservation | None]: ...

    async def cancel(self, reservation: Reservation) -> None: ...

    def settle(self, key_id: str, rights: KeyRights, tokens: int, now: float) -> None: ...

    async def hold(self, key_id: str, limit: int, wait: float) -> Lease | None: ...

    def release(self, lease: Lease) -> None: ...

    def seed_daily(self, key_id: str, tokens: int, now: float) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a decision needs from a key's counters at one instant (from memory, or from Redis in one script).

    `*_free_at`: seconds until the window's total drops below the key's limit (`Window.free_at`; 0 without a limit).
    """

    requests: int = 0
    requests_free_at: float = 0.0
    tokens: int = 0
    tokens_free_at: float = 0.0
    day_tokens: int = 0


def snapshot_of(counters: KeyCounters, rights: KeyRights, now: float) -> Snapshot:
    return Snapshot(
        requests=counters.requests.sum(now),
        requests_free_at=counters.requests.free_at(now, rights.rpm) if rights.rpm is not None else 0.0,
        tokens=counters.tokens.sum(now),
        tokens_free_at=counters.tokens.free_at(now, rights.tpm) if rights.tpm is not None else 0.0,
        day_tokens=counters.today(now),
    )


def has_limits(rights: KeyRights) -> bool:
    """Whether any counter matters for this key (a key without limits never needs them counted)."""
    return rights.rpm is not None or rights.tpm is not None or rights.daily_tokens is not None


def headers_of(snapshot: Snapshot, rights: KeyRights) -> dict[str, str]:
    headers: dict[str, str] = {}
    if rights.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(rights.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, rights.rpm - snapshot.requests))
        headers["x-ratelimit-reset-requests"] = reset_text(snapshot.requests_free_at if snapshot.requests else 0)
    if rights.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(rights.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, rights.tpm - snapshot.tokens))
        headers["x-ratelimit-reset-tokens"] = reset_text(snapshot.tokens_free_at if snapshot.tokens else 0)
    return headers


def headers_for(counters: KeyCounters, rights: KeyRights, now: float) -> dict[str, str]:
    return headers_of(snapshot_of(counters, rights, now), rights)


def verdict_of(snapshot: Snapshot, rights: KeyRights, now: float) -> Verdict:
    """Whether one more request fits, with the reason, the wait and the headers (pure). The Redis script makes the
    same three comparisons before it reserves."""
    headers = headers_of(snapshot, rights)
    if rights.rpm is not None and snapshot.requests >= rights.rpm:
        reason = f"Rate limit reached: {rights.rpm} requests per minute."
        return Verdict(False, snapshot.requests_free_at, reason, headers)
    if rights.tpm is not None and snapshot.tokens >= rights.tpm:
        return Verdict(False, snapshot.tokens_free_at, f"Rate limit reached: {rights.tpm} tokens per minute.", headers)
    if rights.daily_tokens is not None and snapshot.day_tokens >= rights.daily_tokens:
        wait = (int(now // DAY) + 1) * DAY - now
        return Verdict(
            False, wait, f"Daily quota of {rights.daily_tokens} tokens used up.", headers, code="insufficient_quota"
        )
    # Admitted: the headers count this request too, as OpenAI's do (what remains after it).
    return Verdict(True, headers=headers_of(dataclasses.replace(snapshot, requests=snapshot.requests + 1), rights))


def judge(counters: KeyCounters, rights: KeyRights, now: float) -> Verdict:
    """Whether one more request fits the key's limits now (pure but for pruning the windows)."""
    return verdict_of(snapshot_of(counters, rights, now), rights, now)


class RateLimiter:
    """In-memory counters per key (one process). The synchronous methods are the arithmetic; the `Limiter`
    methods wrap them."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyCounters] = {}

    def _counters(self, key_id: str) -> KeyCounters:
        counters = self._keys.get(key_id)
        if counters is None:
            counters = self._keys[key_id] = KeyCounters()
        return counters

    def admit(self, key_id: str, rights: KeyRights, now: float) -> tuple[Verdict, Reservation | None]:
        counters = self._counters(key_id)
        verdict = judge(counters, rights, now)
        if not verdict.allowed:
            return verdict, None
        counters.requests.add(now, 1)
        return verdict, Reservation(key_id, now)

    def refund(self, reservation: Reservation) -> None:
        self._counters(reservation.key_id).requests.remove(reservation.when, 1)

    def charge(self, key_id: str, tokens: int, now: float) -> None:
        if tokens <= 0:
            return
        counters = self._counters(key_id)
        counters.tokens.add(now, tokens)
        counters.today(now)
        counters.day_tokens += tokens

    def seed_daily(self, key_id: str, tokens: int, now: float) -> None:
        """Tokens this key already used today (from the usage records, at start)."""
        counters = self._counters(key_id)
        counters.today(now)
        counters.day_tokens = tokens

    async def reserve(self, key_id: str, rights: KeyRights, now: float) -> tuple[Verdict, Reservation | None]:
        return self.admit(key_id, rights, now)

    async def cancel(self, reservation: Reservation) -> None:
        self.refund(reservation)

    def settle(self, key_id: str, rights: KeyRights, tokens: int, now: float) -> None:
        self.charge(key_id, tokens, now)

    async def hold(self, key_id: str, limit: int, wait: float) -> Lease | None:
        return None  # one process: the fair queue already holds the key to its max_concurrent

    def release(self, lease: Lease) -> None:
        pass

    async def close(self) -> None:
        pass
