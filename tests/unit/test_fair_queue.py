"""The fair queue: the pure choice of the next key, and the queue's behaviour."""

from __future__ import annotations

import asyncio

import pytest

from somner.errors import Unavailable
from somner.gateway.queue import FairQueue, pick_next

pytestmark = pytest.mark.anyio


def test_pick_next_goes_round_robin_and_respects_key_limits() -> None:
    order = ["a", "b", "c"]
    assert pick_next(order, {"a": 5, "b": 1}, {}, {}) == "a"
    assert pick_next(order, {"a": 0, "b": 1}, {}, {}) == "b"
    assert pick_next(order, {"a": 5, "b": 1}, {"a": 2}, {"a": 2}) == "b"  # a is at its own limit
    assert pick_next(order, {"a": 5}, {"a": 2}, {"a": 2}) is None
    assert pick_next([], {}, {}, {}) is None


async def test_turns_alternate_between_keys() -> None:
    queue = FairQueue(max_concurrent=1, max_queue=100, timeout=5)
    first = await queue.enter("a", None)
    served: list[str] = []

    async def wait(key: str) -> None:
        permit = await queue.enter(key, None)
        served.append(key)
        await asyncio.sleep(0)
        queue.leave(permit)

    tasks = [asyncio.create_task(wait("a")) for _ in range(5)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(wait("b")) for _ in range(2)]
    await asyncio.sleep(0)
    queue.leave(first)
    await asyncio.gather(*tasks)
    assert served[:4] == ["a", "b", "a", "b"]
    assert queue.running == 0 and queue.depth == 0


async def test_full_queue_and_timeouts_are_503() -> None:
    queue = FairQueue(max_concurrent=1, max_queue=1, timeout=0.1)
    held = await queue.enter("a", None)
    waiter = asyncio.create_task(queue.enter("b", None))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="too many"):
        await queue.enter("c", None)
    with pytest.raises(Unavailable, match="no turn"):
        await waiter
    assert queue.depth == 0
    queue.leave(held)
    queue.leave(held)  # idempotent
    assert queue.running == 0


async def test_per_key_concurrency_queues_instead_of_refusing() -> None:
    queue = FairQueue(max_concurrent=10, max_queue=10, timeout=1)
    one = await queue.enter("a", 1)
    second = asyncio.create_task(queue.enter("a", 1))
    other = await queue.enter("b", 1)  # another key is not held up
    await asyncio.sleep(0.01)
    assert not second.done()
    queue.leave(one)
    permit = await second
    queue.leave(permit)
    queue.leave(other)
    assert queue.running == 0


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    queue = FairQueue(max_concurrent=1, max_queue=5, timeout=5)
    held = await queue.enter("a", None)
    waiter = asyncio.create_task(queue.enter("b", None))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.depth == 0
    queue.leave(held)
    assert queue.running == 0
