"""Serving one admitted request, for every dialect: admission, the model lease, the generation, the one ending.

`begin` resolves the model (an unknown one is a 404 before any quota is spent), applies the gateway's checks and
admission (429/503), then takes a lease on the model (loading it if needed). The returned `Call` must be closed
exactly once, with the outcome: it releases the lease (with the request's keep_alive) and finishes the ticket,
which frees the turn, charges the tokens and writes the usage record.

`start_chat` and `start_completion` do that and open the engine's stream. A dialect then either takes the `collected`
whole reply or encodes the `observed` chunks into its own events and answers with `streamed`, which ends the
events with the dialect's trailer, or with its error event if the generation fails midway, and closes the call
however the response ends.

Every use of the engine goes through the call (`Call.on_engine`, `open_chat`, `tokenizer_of`, ...): when the engine
turns out to be gone before the request had its first token (`EngineGone`), the call gets a lease on a fresh engine
from the model manager and runs the request there, once (`Call.recover`); streams do the same up to their first
token (`Resuming`). Only if that also fails does the client see the error, with Retry-After.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from somner.api.errors import internal_error, request_id
from somner.api.principal import lane_of, principal_of
from somner.api.streaming import ClientDisconnected, event_stream, shutting_down, until_disconnected
from somner.core import ChatRequest, Chunk, CompletionRequest
from somner.core.streams import Collected, collect, collect_choices
from somner.errors import BadRequest, EngineGone, SomnerError
from somner.gateway import images
from somner.gateway.admission import Ticket, status_of
from somner.models import defaults
from somner.models.backends.base import Backend, ChunkStream, Tokenizes
from somner.models.backends.passthrough import PassThrough
from somner.models.capabilities import Capability
from somner.models.manager import Lease, ModelManager
from somner.models.registry import ModelSpec
from somner.observability.requests import remember_ticket
from somner.services import Services

log = logging.getLogger(__name__)

T = TypeVar("T")
_RETRY_AFTER = "2"  # seconds, on the error of a request whose second engine failed too


@dataclass(eq=False)
class Call:
    ticket: Ticket
    lease: Lease
    keep: float | None
    manager: ModelManager
    prompt_text: str | None = None
    text: list[str] = field(default_factory=list)  # the completion, kept only when requests are logged
    completed: bool = False
    error_status: int | None = None  # a stream that ended with an error event
    closed: bool = False
    recovered: bool = False  # the request already moved to a fresh engine once

    @property
    def spec(self) -> ModelSpec:
        return self.lease.spec

    async def on_engine(self, use: Callable[[Backend], Awaitable[T]]) -> T:
        """`use(backend)`, and once more on a fresh engine if this one turns out to be gone."""
        try:
            return await use(self.lease.backend)
        except EngineGone as exc:
            await self.recover(exc)
        return await use(self.lease.backend)

    async def recover(self, error: EngineGone) -> None:
        """The engine was gone before this request had a token: move the call to a fresh engine (the manager
        starts one, or waits for the one starting), or raise `error` when that cannot be: a second time, or an
        engine the manager does not run. Errors from here on say when to try again."""
        if self.recovered:
            error.headers.setdefault("Retry-After", _RETRY_AFTER)
            raise error
        self.recovered = True
        try:
            fresh = await self.manager.replace(self.lease, error.message)
        except SomnerError as exc:
            exc.headers.setdefault("Retry-After", _RETRY_AFTER)
            raise
        if fresh is None:
            raise error
        old, self.lease = self.lease, fresh
        old.release()

    def observe(self, chunk: Chunk) -> None:
        """Account for one chunk on its way to the client."""
        self.lease.progress()
        if chunk.text or chunk.reasoning:
            self.ticket.first_token()
            self.ticket.usage.completion_tokens += 1
            if self.prompt_text is not None:
                self.text.append(chunk.text)
        if chunk.usage is not None:
            self.ticket.usage = dataclasses.replace(chunk.usage)  # a copy: the chunk's own object goes on

    def close(self, status: int, *, disconnected: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.lease.release(self.keep)
        finally:
            self.ticket.finish(
                status,
                disconnected=disconnected,
                prompt_text=self.prompt_text,
                completion_text="".join(self.text) if self.prompt_text is not None else None,
            )

    def close_stream(self) -> None:
        """For streams: completed, ended with an error event, or cut off by the client."""
        if self.completed:
            self.close(200)
        elif self.error_status is not None:
            self.close(self.error_status)
        else:
            self.close(499, disconnected=True)


async def begin(
    request: Request,
    services: Services,
    *,
    model: str,
    dialect: str,
    route: str,
    bytes_in: int,
    max_tokens: int | None = None,
    messages: int = 0,
    keep: float | None = None,
    prompt_text: str | None = None,
) -> Call:
    principal = principal_of(request)
    spec = services.manager.resolve(model)
    await services.capabilities.require(spec, route)  # (a reranker asked to chat, a text model asked to rerank)
    services.gateway.check_request(principal, (model, spec.id), max_tokens, messages)
    ticket = await services.gateway.admit(
        principal,
        lane=lane_of(request),
        request_id=request_id(request),
        model=spec.id,
        dialect=dialect,
        route=route,
        bytes_in=bytes_in,
    )
    remember_ticket(request.scope, ticket)
    try:
        lease = await services.manager.acquire(spec.id)
    except BaseException as exc:
        ticket.finish(status_of(exc))
        raise
    logged = prompt_text if services.gateway.log_requests else None
    return Call(ticket=ticket, lease=lease, keep=keep, manager=services.manager, prompt_text=logged)


def fail(call: Call, error: BaseException) -> None:
    """Close a call whose request failed, or whose client left, before its response started."""
    if isinstance(error, ClientDisconnected | asyncio.CancelledError):
        call.close(499, disconnected=True)
    else:
        call.close(status_of(error))


# -- generations -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """How a dialect's request is admitted and recorded."""

    dialect: str
    route: str
    bytes_in: int
    keep: float | None = None
    prompt_text: str | None = None


async def close_stream(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def count_prompt(call: Call, stream: ChunkStream) -> None:
    """Charge the prompt tokens an engine reported up front (kept even if the stream then breaks off)."""
    known = getattr(stream, "prompt_tokens", None)
    if isinstance(known, int):
        call.ticket.usage.prompt_tokens += known


Opener = Callable[[Backend], Awaitable[ChunkStream]]


class Resuming:
    """An engine's chunk stream that, when the engine goes away before the first token, is opened again on a fresh
    engine (`Call.recover`) and goes on from there: the client sees one stream."""

    __slots__ = ("_call", "_open", "_started", "_stream", "prompt_tokens")

    def __init__(self, call: Call, open_: Opener, stream: ChunkStream) -> None:
        self._call = call
        self._open = open_
        self._stream = stream
        self._started = False
        known = getattr(stream, "prompt_tokens", None)
        self.prompt_tokens = known if isinstance(known, int) else None

    @classmethod
    async def open(cls, call: Call, open_: Opener) -> Resuming:
        return cls(call, open_, await call.on_engine(open_))

    def __aiter__(self) -> Resuming:
        return self

    async def __anext__(self) -> Chunk:
        try:
            chunk = await self._stream.__anext__()
        except EngineGone as exc:
            if self._started:
                raise
            await self._resume(exc)
            return await self.__anext__()
        if not self._started and (chunk.text or chunk.reasoning or chunk.tool_calls or chunk.finish_reason is not None):
            self._started = True
        return chunk

    async def _resume(self, error: EngineGone) -> None:
        await close_stream(self._stream)
        await self._call.recover(error)
        self._stream = await self._open(self._call.lease.backend)
        known = getattr(self._stream, "prompt_tokens", None)
        if isinstance(known, int):  # the prompt is charged once: the fresh engine's count replaces the lost one's
            self._call.ticket.usage.prompt_tokens += known - (self.prompt_tokens or 0)
            self.prompt_tokens = known

    async def aclose(self) -> None:
        await close_stream(self._stream)


def resumable(call: Call, events: PassThrough, open_: Callable[[Backend], Awaitable[PassThrough]]) -> PassThrough:
    """`events` (an engine's relayed stream), set to go on from a fresh engine if its engine goes away before the
    first token."""

    async def resume(error: EngineGone) -> PassThrough:
        await call.recover(error)
        return await open_(call.lease.backend)

    events.resume = resume
    return events


async def begin_chat(request: Request, services: Services, core: ChatRequest, admission: Admission) -> Call:
    """Admit a chat request and lease its model; the model's defaults are applied to `core`. Images are checked
    (and fetched from allowed hosts) first, and refused for a model without vision; thinking asked of a model that
    does not reason is refused too (turning it off is not)."""
    if core.reasoning.enabled:
        await services.capabilities.require_capability(services.manager.resolve(core.model), Capability.REASONING)
    if images.images_of(core.messages):
        await services.capabilities.require_capability(services.manager.resolve(core.model), Capability.VISION)
        await images.prepare(core.messages, services.settings.limits)
    call = await begin(
        request,
        services,
        model=core.model,
        dialect=admission.dialect,
        route=admission.route,
        bytes_in=admission.bytes_in,
        max_tokens=core.sampling.max_tokens,
        messages=len(core.messages),
        keep=admission.keep,
        prompt_text=admission.prompt_text,
    )
    defaults.apply_to_chat(core, call.spec.entry.defaults)
    defaults.apply_reasoning(core, call.spec.entry)
    services.presets.apply(core.sampling)
    return call


async def open_chat(call: Call, core: ChatRequest) -> ChunkStream:
    """The engine's stream for an admitted chat request (the call is closed if the engine refuses it)."""
    try:
        stream = await Resuming.open(call, lambda backend: backend.chat(core))
    except BaseException as exc:
        fail(call, exc)
        raise
    count_prompt(call, stream)
    return stream


async def start_chat(
    request: Request, services: Services, core: ChatRequest, admission: Admission
) -> tuple[Call, ChunkStream]:
    call = await begin_chat(request, services, core, admission)
    return call, await open_chat(call, core)


async def begin_completion(
    request: Request, services: Services, cores: list[CompletionRequest], admission: Admission
) -> Call:
    """Admit a completion request (one core request per prompt) and lease its model; defaults are applied."""
    call = await begin(
        request,
        services,
        model=cores[0].model,
        dialect=admission.dialect,
        route=admission.route,
        bytes_in=admission.bytes_in,
        max_tokens=cores[0].sampling.max_tokens,
        keep=admission.keep,
        prompt_text=admission.prompt_text,
    )
    for core in cores:
        defaults.apply_to_completion(core, call.spec.entry.defaults)
        services.presets.apply(core.sampling)
    return call


async def open_completions(call: Call, cores: list[CompletionRequest]) -> list[ChunkStream]:
    """The engine's streams, one per prompt; if one is refused, those opened are closed and so is the call."""
    streams: list[ChunkStream] = []
    try:
        for core in cores:
            streams.append(await Resuming.open(call, _completion(core)))
            count_prompt(call, streams[-1])
    except BaseException as exc:
        for stream in streams:
            await close_stream(stream)
        fail(call, exc)
        raise
    return streams


def _completion(core: CompletionRequest) -> Opener:
    return lambda backend: backend.complete(core)


async def start_completion(
    request: Request, services: Services, core: CompletionRequest, admission: Admission
) -> tuple[Call, ChunkStream]:
    call = await begin_completion(request, services, [core], admission)
    return call, (await open_completions(call, [core]))[0]


async def finished(request: Request, call: Call, work: Awaitable[T], *streams: object) -> T:
    """`work`'s result (cancelled if the client leaves first); the call is closed either way, and on failure the
    engine `streams` are closed too."""
    try:
        result = await until_disconnected(request, work)
    except BaseException as exc:
        for stream in streams:
            await close_stream(stream)
        fail(call, exc)
        raise
    call.close(200)
    return result


async def collected(request: Request, call: Call, stream: ChunkStream) -> Collected:
    """The whole reply of a stream that is not streamed to the client; the call is closed either way."""
    return await finished(request, call, collect(stream, call.observe), stream)


async def collected_choices(request: Request, call: Call, stream: ChunkStream, choices: int) -> list[Collected]:
    """`collected` for a request with several choices (`n`): one whole reply per choice."""
    return await finished(request, call, collect_choices(stream, choices, call.observe), stream)


async def observed(call: Call, stream: ChunkStream) -> AsyncIterator[Chunk]:
    """The chunks, accounted for on their way to the client."""
    async for chunk in stream:
        call.observe(chunk)
        yield chunk


ErrorEvent = Callable[[SomnerError], bytes]


async def _ending(
    request: Request, call: Call, events: AsyncIterator[bytes], error_event: ErrorEvent, trailer: bytes
) -> AsyncIterator[bytes]:
    """The events, counted, then the trailer; if they fail, one final error event instead (a stream cannot change
    its status any more)."""
    try:
        async for data in events:
            call.ticket.bytes_out += len(data)
            yield data
        call.completed = True
        if trailer:
            call.ticket.bytes_out += len(trailer)
            yield trailer
    except SomnerError as exc:
        call.error_status = exc.status
        yield error_event(exc)
    except Exception:
        log.exception("stream failed [%s]", request_id(request))
        call.error_status = 500
        yield error_event(internal_error(request))


def streamed(
    request: Request,
    call: Call,
    events: AsyncIterator[bytes],
    *closers: object,
    error_event: ErrorEvent,
    trailer: bytes = b"",
    media_type: str = "text/event-stream",
) -> Response:
    """A streamed response of a dialect's events. However it ends, the engine streams (`closers`) are closed and
    the call is closed with the outcome."""

    async def done() -> None:
        try:
            for closer in closers:
                await close_stream(closer)
        finally:
            call.close_stream()

    def cut() -> bytes:  # the drain deadline passed: the server ends the stream, and says so
        call.error_status = 503
        return error_event(shutting_down())

    services: Services = request.app.state.services
    return event_stream(
        _ending(request, call, events, error_event, trailer),
        on_close=done,
        media_type=media_type,
        headers=call.ticket.headers,
        keepalive_interval=services.settings.stream_keepalive,
        stop=services.cutoff,
        on_stop=cut,
    )


# -- requests that name no model ----------------------------------------------------------------------------


def default_model(services: Services) -> str:
    """The model for dialects whose requests need not name one (Kobold, the tokenizer): the server's `--model`,
    else the only model there is."""
    if services.registry.default_id is not None:
        return services.registry.default_id
    ids = services.registry.ids()
    if len(ids) == 1:
        return ids[0]
    raise BadRequest(
        f"Name the model: this server has {len(ids) or 'no'} models and no default (set `model`).", param="model"
    )


class CallTokenizer:
    """The tokenizer of the call's engine, used through the call (a lost engine is replaced once)."""

    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
        self._call = call

    async def tokenize(
        self, text: str, *, add_special: bool = False, with_pieces: bool = False, parse_special: bool = True
    ) -> list[Any]:
        return await self._call.on_engine(
            lambda backend: _tokenizer(backend).tokenize(
                text, add_special=add_special, with_pieces=with_pieces, parse_special=parse_special
            )
        )

    async def detokenize(self, tokens: list[int], *, special: bool = True) -> str:
        return await self._call.on_engine(lambda backend: _tokenizer(backend).detokenize(tokens, special=special))

    async def apply_template(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        return await self._call.on_engine(
            lambda backend: _tokenizer(backend).apply_template(request, add_generation_prompt=add_generation_prompt)
        )


def _tokenizer(backend: Backend) -> Tokenizes:
    if not isinstance(backend, Tokenizes):
        raise BadRequest("The engine serving this model does not offer tokenization.", code="unsupported")
    return backend


def tokenizer_of(call: Call) -> Tokenizes:
    _tokenizer(call.lease.backend)  # (refused before any work when the engine has none)
    return CallTokenizer(call)


async def tokenized(request: Request, call: Call, use: Callable[[Tokenizes], Awaitable[T]]) -> T:
    """What `use` makes of the call's tokenizer (an engine without one is a 400); the call is closed either way, as
    by `finished`."""

    async def work() -> T:
        return await use(tokenizer_of(call))

    return await finished(request, call, work())


def tokenizer_if_any(call: Call) -> Tokenizes | None:
    """The call's tokenizer, or None when its engine offers none."""
    return CallTokenizer(call) if isinstance(call.lease.backend, Tokenizes) else None


async def tokenizing(request: Request, services: Services, model: str | None, dialect: str, bytes_in: int) -> Call:
    """Admit a tokenizer request (it counts against rate limits like any other) and lease its model."""
    return await begin(
        request,
        services,
        model=model or default_model(services),
        dialect=dialect,
        route="tokenize",
        bytes_in=bytes_in,
    )
