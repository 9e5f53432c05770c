"""The request log feed: fan-out to live subscribers, a replay of recent events, slow readers losing the oldest
events (never holding the publisher up), and every subscription ending when the feed closes."""

from __future__ import annotations

import asyncio

import pytest

from somner.observability.request_feed import Event, RequestFeed, Subscription

pytestmark = pytest.mark.anyio


async def drain(subscription: Subscription) -> list[Event]:
    return [event async for event in subscription.events()]


async def test_subscribers_get_recent_events_then_live_ones_until_close() -> None:
    feed = RequestFeed(recent=2)
    for n in range(3):
        feed.publish({"n": n})
    replaying = feed.subscribe()
    live_only = feed.subscribe(replay=False)
    assert feed.subscribers == 2
    feed.publish({"n": 3})
    feed.close()
    assert [e["n"] for e in await drain(replaying)] == [1, 2, 3]
    assert [e["n"] for e in await drain(live_only)] == [3]
    assert feed.subscribers == 0
    late = feed.subscribe()  # after the close: the replay, then the end
    assert [e["n"] for e in await drain(late)] == [2, 3]


async def test_a_slow_subscriber_loses_the_oldest_events_and_the_publisher_never_waits() -> None:
    feed = RequestFeed(recent=1, queue_size=3)
    slow = feed.subscribe(replay=False)
    for n in range(10):
        feed.publish({"n": n})  # (synchronous: nothing here can block)
    feed.close()
    assert [e["n"] for e in await drain(slow)] == [8, 9]  # room for 3: the two newest, then the end
    assert slow.dropped == 8


async def test_a_closed_subscription_is_forgotten() -> None:
    feed = RequestFeed()
    subscription = feed.subscribe()
    reader = asyncio.create_task(drain(subscription))
    await asyncio.sleep(0)
    subscription.close()
    assert feed.subscribers == 0
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
