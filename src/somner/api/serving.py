"""Serving one admitted request, for every dialect: admission, the model lease, the generation, the one ending.

`begin` resolves the model (an unknown one is a 404 before any quota is spent), applies the gateway's checks and
admission (429/503), then takes a lease on the model (loading it if needed). The returned `Call` must be closed
exactly once, with the outcome: it releases the lease (with the request's keep_alive) and finishes the ticket,
which frees the turn, charges the tokens and writes the usage record.

`start_chat` and `start_completion` do that and open the engine's stream. A dialect then either takes the `collected`
whole reply or encodes the `observed` chunks into its own events and answers with `streamed`, which ends the
events with the dialect's trailer, or with its error event if the generation fails midway, and closes the call
however the response ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from somner.api.errors import internal_error, request_id
from somner.api.principal import lane_of, principal_of
from somner.api.streaming import ClientDisconnected, event_stream, until_disconnected
from somner.core import ChatRequest, Chunk, CompletionRequest
from somner.core.streams import Collected, collect
from somner.errors import BadRequest, SomnerError
from somner.gateway.admission import Ticket, status_of
from somner.models import defaults
from somner.models.backends.base import ChunkStream, Tokenizes
from somner.models.manager import Lease
from somner.models.registry import ModelSpec
from somner.observability.requests import remember_ticket
from somner.services import Services

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Call:
    ticket: Ticket
    lease: Lease
    keep: float | None
    prompt_text: str | None = None
    text: list[str] = field(default_factory=list)  # the completion, kept only when requests are logged
    completed: bool = False
    error_status: int | None = None  # a stream that ended with an error event
    closed: bool = False

    @property
    def spec(self) -> ModelSpec:
        return self.lease.spec

    def observe(self, chunk: Chunk) -> None:
        """Account for one chunk on its way to the client."""
        self.lease.progress()
        if chunk.text:
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
    return Call(ticket=ticket, lease=lease, keep=keep, prompt_text=logged)


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


async def begin_chat(request: Request, services: Services, core: ChatRequest, admission: Admission) -> Call:
    """Admit a chat request and lease its model; the model's defaults are applied to `core`."""
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
    return call


async def open_chat(call: Call, core: ChatRequest) -> ChunkStream:
    """The engine's stream for an admitted chat request (the call is closed if the engine refuses it)."""
    try:
        stream = await call.lease.backend.chat(core)
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
    return call


async def open_completions(call: Call, cores: list[CompletionRequest]) -> list[ChunkStream]:
    """The engine's streams, one per prompt; if one is refused, those opened are closed and so is the call."""
    streams: list[ChunkStream] = []
    try:
        for core in cores:
            streams.append(await call.lease.backend.complete(core))
            count_prompt(call, streams[-1])
    except BaseException as exc:
        for stream in streams:
            await close_stream(stream)
        fail(call, exc)
        raise
    return streams


async def start_completion(
    request: Request, services: Services, core: CompletionRequest, admission: Admission
) -> tuple[Call, ChunkStream]:
    call = await begin_completion(request, services, [core], admission)
    return call, (await open_completions(call, [core]))[0]


async def collected(request: Request, call: Call, stream: ChunkStream) -> Collected:
    """The whole reply of a stream that is not streamed to the client; the call is closed either way."""
    try:
        result = await until_disconnected(request, collect(stream, call.observe))
    except BaseException as exc:
        await close_stream(stream)
        fail(call, exc)
        raise
    call.close(200)
    return result


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

    body = _ending(request, call, events, error_event, trailer)
    return event_stream(body, on_close=done, media_type=media_type, headers=call.ticket.headers)


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


def tokenizer_of(call: Call) -> Tokenizes:
    backend = call.lease.backend
    if not isinstance(backend, Tokenizes):
        raise BadRequest("The engine serving this model does not offer tokenization.", code="unsupported")
    return backend


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
