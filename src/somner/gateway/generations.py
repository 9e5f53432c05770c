"""The generations in progress, by caller, so a caller can abort its own or read its text so far.

KoboldCpp front ends stop a generation with `POST /api/extra/abort` and poll `POST /api/extra/generate/check`
for its partial text, naming it by an optional `genkey`. A caller reaches only its own generations: `owner` is the
caller's identity (its key id, or its address when auth is off), so another key cannot abort or read them even
with the same genkey.

Aborting sets the generation's flag; `Generation.watch` races each next chunk against it, so an engine that is
slow to produce its next token does not delay the abort, and closes the engine's stream so the engine stops
decoding. The registry is per gateway process: with several replicas an abort reaches only the replica that
serves the generation (KoboldCpp itself is a single process).

It also keeps what KoboldCpp's `/api/extra/perf` reports: how many generations finished, when the last one ended,
and each caller's last generation (its sizes and speeds), so that a caller sees its own measurements only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from somner.core import Chunk, FinishReason

REMEMBERED_CALLERS = 1024
"""Callers whose last generation is kept (the least recently finished are forgotten first): with auth off a
caller is an address, so the number of callers is not bounded by the number of keys."""


async def _close(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


@dataclass(eq=False)
class Generation:
    owner: str
    genkey: str
    registry: Generations | None = field(default=None, repr=False)
    pieces: list[str] = field(default_factory=list)
    aborted: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        """The text generated so far."""
        return "".join(self.pieces)

    def abort(self) -> None:
        self.aborted.set()

    def finish(self) -> None:
        """Leave the registry (idempotent): the generation is over however it ended."""
        if self.registry is not None:
            self.registry.finish(self)

    async def aclose(self) -> None:
        """`finish`, in the shape of a stream's close, so a streamed response closes it with the engine stream."""
        self.finish()

    async def watch(self, stream: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk]:
        """The chunks of `stream`, their text recorded, until it ends or the generation is aborted. However this
        ends (finished, aborted, or closed by its consumer), `stream` is closed."""
        abort = asyncio.ensure_future(self.aborted.wait())
        try:
            while not self.aborted.is_set():
                step = asyncio.ensure_future(anext(stream))
                try:
                    await asyncio.wait({step, abort}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not step.done():
                        step.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await step
                if step.cancelled():
                    return  # aborted while the engine was working on its next chunk
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    return
                if chunk.text:
                    self.pieces.append(chunk.text)
                yield chunk
        finally:
            abort.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await abort
            await _close(stream)


@dataclass(frozen=True, slots=True)
class Finished:
    """The measurements of a finished (or aborted) generation. Times in seconds; `finish_reason` None: aborted."""

    prompt_tokens: int
    output_tokens: int
    prompt_seconds: float
    output_seconds: float
    seed: int | None
    finish_reason: FinishReason | None
    stop_sequence: bool  # ended on one of the request's stop strings


class Generations:
    """The registry of generations in progress (one per gateway process, in `Services`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._active: dict[str, list[Generation]] = {}
        self._clock = clock
        self._created = clock()
        self._last: OrderedDict[str, Finished] = OrderedDict()
        self.total = 0  # generations finished since start
        self.last_ended: float | None = None  # when (on `clock`) the latest one ended

    def record(self, owner: str, finished: Finished) -> None:
        """Note a generation that ended, as the owner's last."""
        self.total += 1
        self.last_ended = self._clock()
        self._last[owner] = finished
        self._last.move_to_end(owner)
        while len(self._last) > REMEMBERED_CALLERS:
            self._last.popitem(last=False)

    def last(self, owner: str) -> Finished | None:
        """The owner's last finished generation, if it is remembered."""
        return self._last.get(owner)

    def idle_seconds(self) -> float:
        """How long no generation has run: 0 while one does; else since the last one ended (or since this registry
        was made, when none has)."""
        if self._active:
            return 0.0
        return max(0.0, self._clock() - (self.last_ended if self.last_ended is not None else self._created))

    def start(self, owner: str, genkey: str = "") -> Generation:
        """Register a generation; `finish` it however it ends. Several may share an owner and a genkey."""
        generation = Generation(owner=owner, genkey=genkey, registry=self)
        self._active.setdefault(owner, []).append(generation)
        return generation

    def finish(self, generation: Generation) -> None:
        mine = self._active.get(generation.owner, [])
        if generation in mine:
            mine.remove(generation)
        if not mine:
            self._active.pop(generation.owner, None)

    def _matching(self, owner: str, genkey: str | None) -> list[Generation]:
        mine = self._active.get(owner, [])
        return [g for g in mine if genkey is None or g.genkey == genkey]

    def abort(self, owner: str, genkey: str | None = None) -> int:
        """Abort the owner's generations with `genkey` (None: all of the owner's); how many were aborted."""
        found = [g for g in self._matching(owner, genkey) if not g.aborted.is_set()]
        for generation in found:
            generation.abort()
        return len(found)

    def current(self, owner: str, genkey: str | None = None) -> Generation | None:
        """The owner's latest generation in progress with `genkey` (None: with any)."""
        found = self._matching(owner, genkey)
        return found[-1] if found else None

    def __len__(self) -> int:
        return sum(len(items) for items in self._active.values())
