"""Consuming chunk streams: collecting one into a whole reply, running several at once (one per prompt of a
multi-prompt completion, one per choice of a request with `n` > 1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from somner.core.tool_calls import ToolCallAssembler
from somner.core.types import Chunk, FinishReason, TokenLogprob, Usage

T = TypeVar("T")


class _End:
    """Marks the end of one merged stream."""


async def merge(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items of all streams as (stream index, item), in arrival order. An error in any stream ends the merge
    and is raised; when the merge ends early (error, or the consumer stops), every stream is closed."""
    if len(streams) == 1:
        async for only in streams[0]:
            yield 0, only
        return
    queue: asyncio.Queue[tuple[int, T | _End | Exception]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put((index, exc))
            return
        await queue.put((index, _End()))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if isinstance(item, _End):
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for stream in streams:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


async def gather_all(awaitables: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Await all together; if one fails, cancel the rest and raise that one's error (not an ExceptionGroup)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(aw) for aw in awaitables]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return [task.result() for task in tasks]


@dataclass(slots=True)
class Collected:
    """A whole generation: its text, tool calls, logprobs, and final chunk (finish reason, usage, timings)."""

    text: str = ""
    reasoning: str = ""  # a reasoning model's thinking, split from the text
    last: Chunk = field(default_factory=Chunk)
    logprobs: list[TokenLogprob] | None = None
    tool_calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)

    @property
    def finish_reason(self) -> FinishReason:
        return self.last.finish_reason or FinishReason.STOP

    @property
    def usage(self) -> Usage:
        return self.last.usage or Usage()


async def collect(chunks: AsyncIterator[Chunk], observe: Callable[[Chunk], None] | None = None) -> Collected:
    """Read a stream to its end (calling `observe` on each chunk) and put the reply together."""
    parts: list[str] = []
    thoughts: list[str] = []
    result = Collected()
    async for chunk in chunks:
        if observe is not None:
            observe(chunk)
        parts.append(chunk.text)
        if chunk.reasoning:
            thoughts.append(chunk.reasoning)
        if chunk.logprobs:
            result.logprobs = (result.logprobs or []) + chunk.logprobs
        result.tool_calls.add(chunk.tool_calls)
        result.last = chunk
    result.text = "".join(parts)
    result.reasoning = "".join(thoughts)
    return result


def choices_usage(usages: Sequence[Usage]) -> Usage:
    """The usage of several choices of one prompt: the prompt once (as OpenAI counts it), the outputs summed."""
    return Usage(
        prompt_tokens=usages[0].prompt_tokens if usages else 0,
        completion_tokens=sum(u.completion_tokens for u in usages),
        cached_tokens=usages[0].cached_tokens if usages else 0,
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
    )


async def merge_choices(streams: Sequence[AsyncIterator[Chunk]]) -> AsyncIterator[Chunk]:
    """The choices of one prompt as one stream: stream i's chunks get `index` i, in arrival order. Each choice
    keeps its finish chunk; the usage goes only on the last one, for all choices together (`choices_usage`)."""
    if len(streams) == 1:
        async for only in streams[0]:
            yield only
        return
    usages: list[Usage] = []
    async for index, chunk in merge(streams):
        chunk.index = index
        if chunk.finish_reason is not None:
            usages.append(chunk.usage or Usage())
            chunk.usage = choices_usage(usages) if len(usages) == len(streams) else None
        yield chunk


async def collect_choices(
    chunks: AsyncIterator[Chunk], choices: int, observe: Callable[[Chunk], None] | None = None
) -> list[Collected]:
    """Read a stream of `choices` choices to its end and put each reply together (reply i from the chunks with
    `index` i; indexes outside the range are folded into the last)."""
    parts: list[list[str]] = [[] for _ in range(choices)]
    thoughts: list[list[str]] = [[] for _ in range(choices)]
    results = [Collected() for _ in range(choices)]
    async for chunk in chunks:
        if observe is not None:
            observe(chunk)
        index = min(max(chunk.index, 0), choices - 1)
        result = results[index]
        parts[index].append(chunk.text)
        if chunk.reasoning:
            thoughts[index].append(chunk.reasoning)
        if chunk.logprobs:
            result.logprobs = (result.logprobs or []) + chunk.logprobs
        result.tool_calls.add(chunk.tool_calls)
        if chunk.finish_reason is not None or result.last.finish_reason is None:
            result.last = chunk
    for result, texts, thought in zip(results, parts, thoughts, strict=True):
        result.text = "".join(texts)
        result.reasoning = "".join(thought)
    return results


def total_usage(results: Sequence[Collected]) -> Usage:
    """The usage the replies' final chunks carry, together (a reply without any adds nothing)."""
    total = Usage()
    for result in results:
        total.add(result.last.usage)
    return total
