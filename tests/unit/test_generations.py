"""The registry of generations in progress: a caller aborts and reads only its own; an abort stops the stream
at once and closes the engine's stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from somner.core import Chunk, FinishReason
from somner.gateway.generations import REMEMBERED_CALLERS, Finished, Generations

pytestmark = pytest.mark.anyio


class EngineStream:
    """An engine stream: `count` chunks, `delay` seconds apart, then the finish; records that it was closed."""

    def __init__(self, count: int, delay: float = 0.0) -> None:
        self.count = count
        self.delay = delay
        self.produced = 0
        self.closed = False
        self._chunks = self._generate()

    async def _generate(self) -> AsyncGenerator[Chunk]:
        for i in range(self.count):
            await asyncio.sleep(self.delay)
            self.produced += 1
            yield Chunk(text=f"t{i} ")
        yield Chunk(finish_reason=FinishReason.STOP)

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> Chunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        self.closed = True
        await self._chunks.aclose()


async def test_watch_passes_everything_and_records_text() -> None:
    registry = Generations()
    generation = registry.start("key-a", "g1")
    engine = EngineStream(3)
    chunks = [c async for c in generation.watch(engine)]
    assert [c.text for c in chunks] == ["t0 ", "t1 ", "t2 ", ""]
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert generation.text == "t0 t1 t2 " and engine.closed
    assert registry.current("key-a", "g1") is generation
    generation.finish()
    generation.finish()  # idempotent
    assert registry.current("key-a") is None and len(registry) == 0


async def test_abort_stops_a_slow_stream_promptly_and_closes_the_engine() -> None:
    registry = Generations()
    generation = registry.start("key-a")
    engine = EngineStream(1000, delay=0.05)
    seen: list[str] = []
    two_seen = asyncio.Event()

    async def consume() -> None:
        async for chunk in generation.watch(engine):
            seen.append(chunk.text)
            if len(seen) == 2:
                two_seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(two_seen.wait(), 1.0)
    assert registry.abort("key-a") == 1
    await asyncio.wait_for(task, 1.0)  # well before the next 998 chunks
    assert engine.closed and engine.produced < 10
    assert generation.text == "".join(seen)
    assert registry.abort("key-a") == 0  # already aborted


async def test_an_abort_before_the_first_chunk_yields_nothing() -> None:
    registry = Generations()
    generation = registry.start("key-a", "g")
    registry.abort("key-a", "g")
    engine = EngineStream(5)
    assert [c async for c in generation.watch(engine)] == []
    assert engine.closed and engine.produced == 0


async def test_a_caller_reaches_only_its_own_generations() -> None:
    registry = Generations()
    mine = registry.start("key-a", "shared")
    other = registry.start("key-b", "shared")
    unkeyed = registry.start("key-a")
    assert registry.abort("key-c") == 0
    assert registry.current("key-c", "shared") is None
    assert registry.abort("key-a", "nope") == 0
    assert registry.abort("key-a", "shared") == 1
    assert mine.aborted.is_set() and not other.aborted.is_set() and not unkeyed.aborted.is_set()
    assert registry.current("key-b", "shared") is other
    assert registry.current("key-a") is unkeyed  # the latest of the caller's
    assert registry.abort("key-a") == 1  # all of the caller's not yet aborted
    assert unkeyed.aborted.is_set() and not other.aborted.is_set()


async def test_closing_the_watch_closes_the_engine() -> None:
    generation = Generations().start("key-a")
    engine = EngineStream(10)
    watch = generation.watch(engine)
    assert (await anext(watch)).text == "t0 "
    await watch.aclose()
    assert engine.closed


async def test_engine_errors_pass_through_and_close_it() -> None:
    class Failing(EngineStream):
        async def __anext__(self) -> Chunk:
            raise RuntimeError("engine died")

    generation = Generations().start("key-a")
    engine = Failing(3)
    with pytest.raises(RuntimeError, match="engine died"):
        async for _ in generation.watch(engine):
            pass
    assert engine.closed


def test_finished_generations_are_kept_per_caller_for_perf() -> None:
    now = [100.0]
    registry = Generations(clock=lambda: now[0])
    done = Finished(
        prompt_tokens=4,
        output_tokens=2,
        prompt_seconds=0.1,
        output_seconds=0.2,
        seed=7,
        finish_reason=FinishReason.STOP,
        stop_sequence=False,
    )
    now[0] = 103.0
    assert registry.idle_seconds() == 3.0  # none yet: idle since the registry was made
    running = registry.start("alice")
    assert registry.idle_seconds() == 0.0
    running.finish()
    registry.record("alice", done)
    assert (registry.total, registry.last("alice"), registry.last("bob")) == (1, done, None)
    now[0] = 110.0
    assert registry.idle_seconds() == 7.0
    for i in range(REMEMBERED_CALLERS):  # only so many callers are remembered, the least recent forgotten first
        registry.record(f"caller{i}", done)
    assert registry.last("alice") is None and registry.last(f"caller{REMEMBERED_CALLERS - 1}") == done
    assert registry.total == REMEMBERED_CALLERS + 1
