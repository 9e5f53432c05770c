"""The request log as a feed: the fields of each request's log line, fanned out to live subscribers (the
console's log tail, `GET /admin/logs/stream`).

Publishing never waits and never fails a request: each subscriber has a bounded queue, and a subscriber too slow
to keep up loses the oldest events (counted, so it can say so) rather than holding the server back. A few recent
events are kept so that a new subscriber starts with some context. The feed closes when the server begins to
drain, which ends every subscription (a browser left open on the log page must not delay a shutdown).
Events carry what the log line carries (route, model, status, tokens, latency, key prefix): never prompt text.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

Event = dict[str, Any]


class Subscription:
    def __init__(self, feed: RequestFeed, size: int) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=size)
        self.dropped = 0  # events lost because this subscriber fell behind

    def offer(self, event: Event | None) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()  # the oldest goes: the tail stays live
                self.dropped += 1

    async def events(self) -> AsyncIterator[Event]:
        """The events from now on (after the recent ones), until the feed closes. The caller `close`s the
        subscription when it stops reading."""
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        self._feed.unsubscribe(self)


class RequestFeed:
    def __init__(self, recent: int = 50, queue_size: int = 500) -> None:
        self._recent: collections.deque[Event] = collections.deque(maxlen=recent)
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Event) -> None:
        self._recent.append(event)
        for subscription in self._subscribers:
            subscription.offer(event)

    def subscribe(self, *, replay: bool = True) -> Subscription:
        subscription = Subscription(self, max(self._queue_size, len(self._recent) + 1))
        if replay:
            for event in self._recent:
                subscription.offer(event)
        if self.closed:
            subscription.offer(None)
        else:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscription (the server is draining); later subscriptions end after their replay."""
        self.closed = True
        for subscription in list(self._subscribers):
            subscription.offer(None)
        self._subscribers.clear()
