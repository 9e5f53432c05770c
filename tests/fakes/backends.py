"""A fake backend for API and manager tests: deterministic, in memory, with scripted failures.

Requests whose last message (or prompt) contains a trigger word misbehave on purpose:
FAIL_BEFORE (error before the stream), FAIL_MIDWAY (error after two chunks), BOOM (an unexpected exception),
SLOW (pauses between chunks), HANG (never produces anything), STALL (two tokens, then nothing until the engine
dies: then its connection breaks). The farm's `vanish` makes the engine that gets the
next generation die (then it is disarmed): "open" when the request reaches it (`EngineGone` at once), "early" after
it accepted the request but before the first token, "midway" after two tokens.

`SupervisedFake` (the farm's `supervised=True`) is a backend the manager runs like an engine process: it has a
heartbeat (`responsive`, false once `frozen`) and can be killed.

A request for several choices (`n`) gets them, choice i with the words rotated by i.

A chat request that forces a tool call (tool_choice "required" or a named function) gets a call of that tool
(the first one for "required") with the arguments `{"word": <first word of the last message>}`, streamed in two
pieces as engines that stream arguments do. The tokenizer is one token per word (ids are word lengths).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from somner.core import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResult,
    FinishReason,
    TokenLogprob,
    ToolCallDelta,
    ToolChoiceMode,
    Usage,
)
from somner.core.streams import merge_choices
from somner.errors import BadRequest, EngineFailed, EngineGone, ModelLoadFailed
from somner.models.registry import ModelSpec


class FakeBackend:
    def __init__(self, farm: FakeFarm, spec: ModelSpec) -> None:
        self.farm = farm
        self.spec = spec
        self.started = False
        self.stopped = False
        self._exit: asyncio.Future[int] | None = None
        self.requests: list[ChatRequest | CompletionRequest] = []

    @property
    def alive(self) -> bool:
        return self.started and not self.stopped and self._exit is not None and not self._exit.done()

    async def start(self) -> None:
        self.farm.starts += 1
        await asyncio.sleep(self.farm.start_delay)
        if self.farm.start_error is not None:
            raise self.farm.start_error
        self._exit = asyncio.get_running_loop().create_future()
        self.started = True

    async def stop(self) -> None:
        self.stopped = True
        self.farm.stops += 1
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(0)

    def crash(self, status: int = -9) -> None:
        assert self._exit is not None
        self._exit.set_result(status)

    async def wait_exit(self) -> int | None:
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    def _die(self) -> EngineGone:
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(-9)
        return EngineGone("the fake engine went away")

    async def _stream(
        self, text: str, prompt_tokens: int, max_tokens: int | None, logprobs: int | None
    ) -> AsyncIterator[Chunk]:
        vanish, self.farm.vanish = self.farm.vanish, None
        if vanish == "open":
            raise self._die()
        if "FAIL_BEFORE" in text:
            raise EngineFailed("the fake engine refused")
        if "BOOM" in text:
            raise RuntimeError("secret internal detail")
        if "CONTEXT" in text:
            raise BadRequest("too long", code="context_length_exceeded", param="messages")
        words = text.split() or ["empty"]
        limit = max_tokens if max_tokens is not None else len(words)

        async def chunks() -> AsyncIterator[Chunk]:
            produced = 0
            if "HANG" in text:
                await asyncio.Event().wait()  # an engine that stops making progress (until cancelled)
            if vanish == "early":
                yield Chunk()  # the opening event an engine sends before any token (a role)
                raise self._die()
            for i, word in enumerate(words[:limit]):
                if "FAIL_MIDWAY" in text and i == 2:
                    raise EngineFailed("the fake engine crashed")
                if i == 2 and vanish == "midway":
                    raise self._die()
                if i == 2 and "STALL" in text and self._exit is not None:
                    await asyncio.shield(self._exit)
                    raise self._die()
                if "SLOW" in text:
                    await asyncio.sleep(0.05)
                produced += 1
                lp = (
                    [TokenLogprob(token=word, logprob=-0.5, bytes=list(word.encode()), top=[])]
                    if logprobs is not None
                    else None
                )
                yield Chunk(text=(" " if i else "") + word, logprobs=lp)
                self.farm.tokens += 1
            reason = FinishReason.LENGTH if limit < len(words) else FinishReason.STOP
            yield Chunk(finish_reason=reason, usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=produced))

        return chunks()

    async def chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.requests.append(request)
        text = request.messages[-1].content
        choice = request.tool_choice
        if request.tools and choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.FUNCTION):
            name = choice.name or request.tools[0].name
            return self._tool_call(name, (text.split() or ["none"])[0], len(request.messages))
        if request.n > 1:
            return await self._choices(
                text, len(request.messages), request.sampling.max_tokens, request.sampling.logprobs, request.n
            )
        return await self._stream(text, len(request.messages), request.sampling.max_tokens, request.sampling.logprobs)

    async def _choices(
        self, text: str, prompt_tokens: int, max_tokens: int | None, logprobs: int | None, n: int
    ) -> AsyncIterator[Chunk]:
        """`n` > 1: choice i is the text with its words rotated by i (choice 0 is what n = 1 gives), the choices'
        chunks interleaved, each choice finished, the usage of all (the prompt once) on the last chunk."""
        words = text.split() or ["empty"]
        streams = [
            await self._stream(
                " ".join(words[i % len(words) :] + words[: i % len(words)]), prompt_tokens, max_tokens, logprobs
            )
            for i in range(n)
        ]
        return merge_choices(streams)

    async def _tool_call(self, name: str, word: str, prompt_tokens: int) -> AsyncIterator[Chunk]:
        arguments = json.dumps({"word": word})
        yield Chunk(tool_calls=[ToolCallDelta(index=0, id="call_fake0", name=name, arguments=arguments[:5])])
        yield Chunk(tool_calls=[ToolCallDelta(index=0, arguments=arguments[5:])])
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=2)
        yield Chunk(finish_reason=FinishReason.TOOL_CALLS, usage=usage)

    def _gone_at_once(self) -> None:
        if self.farm.vanish == "open":
            self.farm.vanish = None
            raise self._die()

    async def tokenize(
        self, text: str, *, add_special: bool = False, with_pieces: bool = False, parse_special: bool = True
    ) -> list[Any]:
        self._gone_at_once()
        ids = [len(word) for word in text.split()]
        if with_pieces:
            return [{"id": i, "piece": word} for i, word in zip(ids, text.split(), strict=True)]
        return ids

    async def detokenize(self, tokens: list[int], *, special: bool = True) -> str:
        return " ".join("x" * t for t in tokens)

    async def apply_template(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        return " ".join(f"{m.role}: {m.content}" for m in request.messages)

    async def complete(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        self.requests.append(request)
        text = request.prompt if isinstance(request.prompt, str) else " ".join(f"t{t}" for t in request.prompt)
        if request.n > 1:
            return await self._choices(
                text, len(text.split()), request.sampling.max_tokens, request.sampling.logprobs, request.n
            )
        return await self._stream(text, len(text.split()), request.sampling.max_tokens, request.sampling.logprobs)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        self._gone_at_once()
        vectors = [[float(len(str(item))), 1.0, 0.0, 0.0] for item in request.inputs]
        return EmbeddingResult(embeddings=vectors, prompt_tokens=len(request.inputs))


class SupervisedFake(FakeBackend):
    """A fake engine process: it answers its heartbeat until `frozen`, and can be killed."""

    def __init__(self, farm: FakeFarm, spec: ModelSpec) -> None:
        super().__init__(farm, spec)
        self.frozen = False
        self.killed = False
        self.heartbeats = 0

    async def responsive(self, within: float) -> bool:
        self.heartbeats += 1
        if self.frozen:
            await asyncio.sleep(within)
            return False
        return self.alive

    async def kill(self) -> None:
        self.killed = True
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(-9)


@dataclass
class FakeFarm:
    """Creates fake backends and counts what happens to them."""

    start_delay: float = 0.0
    start_error: Exception | None = None
    supervised: bool = False  # make SupervisedFake backends
    vanish: str | None = None  # "open", "early", "midway": the engine of the next generation dies then
    starts: int = 0
    stops: int = 0
    tokens: int = 0
    backends: list[FakeBackend] = field(default_factory=list)

    def factory(self, spec: ModelSpec) -> FakeBackend:
        backend = (SupervisedFake if self.supervised else FakeBackend)(self, spec)
        self.backends.append(backend)
        return backend

    def fail_loads(self, message: str = "bad model") -> None:
        self.start_error = ModelLoadFailed(message)
