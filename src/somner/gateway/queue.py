"""A fair, bounded queue in front of the engines.

At most `max_concurrent` requests run at once (and at most a key's own `max_concurrent` for that key). Beyond
that, requests wait, up to `max_queue` of them and for at most `timeout`. Turns go round-robin between keys and
first-in-first-out within a key, so a client with a hundred queued requests delays another client's single
request by one turn, not a hundred. Which key goes next is a pure decision (`pick_next`).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from somner.errors import Unavailable


def pick_next(
    order: Sequence[str], waiting: Mapping[str, int], running: Mapping[str, int], limits: Mapping[str, int | None]
) -> str | None:
    """The first key in round-robin `order` that has someone waiting and room under its own limit."""
    for key in order:
        limit = limits.get(key)
        if waiting.get(key, 0) > 0 and (limit is None or running.get(key, 0) < limit):
            return key
    return None


@dataclass(eq=False)
class Permit:
    key: str
    waited: float = 0.0
    released: bool = False


class FairQueue:
    def __init__(self, max_concurrent: int, max_queue: int, timeout: float) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.timeout = timeout
        self._running: Counter[str] = Counter()
        self._running_total = 0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._order: deque[str] = deque()
        self._limits: dict[str, int | None] = {}

    @property
    def depth(self) -> int:
        return sum(len(w) for w in self._waiting.values())

    @property
    def running(self) -> int:
        return self._running_total

    def _has_room(self, key: str) -> bool:
        limit = self._limits.get(key)
        return self._running_total < self.max_concurrent and (limit is None or self._running[key] < limit)

    def _start(self, key: str) -> None:
        self._running[key] += 1
        self._running_total += 1

    async def enter(self, key: str, key_limit: int | None) -> Permit:
        """Wait for a turn; Unavailable (503, Retry-After) when the queue is full or the wait too long."""
        self._limits[key] = key_limit
        if self._has_room(key) and not self._waiting.get(key) and self.depth == 0:
            self._start(key)
            return Permit(key)
        if self.depth >= self.max_queue:
            raise Unavailable(
                "The server is busy: too many requests are waiting.", code="queue_full", headers={"Retry-After": "2"}
            )
        loop = asyncio.get_running_loop()
        started = loop.time()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(key, deque()).append(turn)
        if key not in self._order:
            self._order.append(key)
        self._dispatch()
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(turn)
        except TimeoutError:
            if turn.done() and not turn.cancelled():
                return Permit(key, loop.time() - started)  # granted at the last moment: keep it
            self._forget(key, turn)
            raise Unavailable(
                f"The server is busy: no turn within {self.timeout:g}s.",
                code="queue_timeout",
                headers={"Retry-After": "5"},
            ) from None
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.leave(Permit(key))  # granted, but the caller went away
            else:
                self._forget(key, turn)
            raise
        return Permit(key, loop.time() - started)

    def _forget(self, key: str, turn: asyncio.Future[None]) -> None:
        turn.cancel()
        lane = self._waiting.get(key)
        if lane is not None and turn in lane:
            lane.remove(turn)
            if not lane:
                del self._waiting[key]
                self._order.remove(key)
        self._dispatch()

    def leave(self, permit: Permit) -> None:
        if permit.released:
            return
        permit.released = True
        self._running[permit.key] -= 1
        self._running_total -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self._running_total < self.max_concurrent:
            waiting = {key: len(lane) for key, lane in self._waiting.items()}
            key = pick_next(list(self._order), waiting, self._running, self._limits)
            if key is None:
                break
            turn = self._waiting[key].popleft()
            self._order.remove(key)
            if self._waiting[key]:
                self._order.append(key)  # its next request goes to the back of the round
            else:
                del self._waiting[key]
            self._start(key)
            turn.set_result(None)
