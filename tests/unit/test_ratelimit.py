"""Rate-limit arithmetic (pure) and the in-memory limiter."""

from __future__ import annotations

import pytest

from somner.gateway.keys import KeyRights
from somner.gateway.ratelimit import DAY, KeyCounters, RateLimiter, Window, judge, reset_text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (0, "0ms"), (1, "1s"), (59.2, "1m"), (90, "1m30s"), (3600, "1h"), (3725, "1h2m5s")],
)
def test_reset_text(seconds: float, text: str) -> None:
    assert reset_text(seconds) == text


def test_sliding_window() -> None:
    window = Window(60)
    window.add(0, 3)
    window.add(30, 4)
    assert window.sum(59) == 7
    assert window.sum(61) == 4  # the first event slid out
    assert window.free_at(61, 4) == pytest.approx(29)  # until the second slides out
    window.remove(30, 4)
    assert window.sum(61) == 0


def test_requests_per_minute() -> None:
    limiter = RateLimiter()
    rights = KeyRights(rpm=3)
    results = [limiter.admit("k", rights, 100.0 + i)[0].allowed for i in range(5)]
    assert results == [True, True, True, False, False]
    verdict, _ = limiter.admit("k", rights, 104.0)
    assert verdict.retry_after == pytest.approx(56.0)
    assert verdict.headers["x-ratelimit-remaining-requests"] == "0"
    assert limiter.admit("k", rights, 160.5)[0].allowed  # the first request left the window


def test_refund_gives_the_place_back() -> None:
    limiter = RateLimiter()
    rights = KeyRights(rpm=1)
    verdict, reservation = limiter.admit("k", rights, 10.0)
    assert verdict.allowed and reservation is not None
    assert not limiter.admit("k", rights, 11.0)[0].allowed
    limiter.refund(reservation)
    assert limiter.admit("k", rights, 12.0)[0].allowed


def test_tokens_per_minute_and_per_day() -> None:
    limiter = RateLimiter()
    rights = KeyRights(tpm=100, daily_tokens=150)
    start = 1000 * DAY + 10
    assert limiter.admit("k", rights, start)[0].allowed
    limiter.charge("k", 100, start)
    refused = limiter.admit("k", rights, start + 1)[0]
    assert not refused.allowed and "tokens per minute" in refused.reason
    assert limiter.admit("k", rights, start + 61)[0].allowed
    limiter.charge("k", 60, start + 61)
    daily = limiter.admit("k", rights, start + 200)[0]
    assert not daily.allowed and "Daily quota" in daily.reason
    assert daily.retry_after == pytest.approx(DAY - 210)
    assert limiter.admit("k", rights, 1001 * DAY + 1)[0].allowed  # a new UTC day


def test_seeded_daily_usage_counts() -> None:
    limiter = RateLimiter()
    limiter.seed_daily("k", 500, 5 * DAY)
    assert not limiter.admit("k", KeyRights(daily_tokens=500), 5 * DAY + 1)[0].allowed


def test_no_limits_no_headers() -> None:
    verdict = judge(KeyCounters(), KeyRights(), 0.0)
    assert verdict.allowed and verdict.headers == {}
