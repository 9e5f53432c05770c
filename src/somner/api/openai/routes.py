"""OpenAI-compatible routes: models, chat completions, completions, embeddings.

Each handler parses the body into its wire schema and a core request, then `serving.begin` admits it and leases
the model. Streams from an engine that speaks OpenAI pass through unparsed; other engines' chunks are encoded here.
However a request ends, its `Call` is closed once (lease released, usage recorded).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.body import read_body
from somner.api.errors import guarded, internal_error, request_id
from somner.api.keep_alive import keep_alive
from somner.api.openai.render import render
from somner.api.principal import principal_of
from somner.api.serving import Call, begin, fail
from somner.api.streaming import event_stream, until_disconnected
from somner.core import Chunk, EmbeddingRequest, TokenLogprob, Usage
from somner.core.streams import gather_all, merge
from somner.errors import BadRequest, SomnerError
from somner.models import defaults
from somner.models.backends.base import ChunkStream, SpeaksOpenAI
from somner.models.backends.openai_http import PassThrough
from somner.services import Services
from somner.wire.openai import decode, encode, schemas

log = logging.getLogger(__name__)

_MODEL_FIELD = re.compile(rb'"model":"(?:[^"\\]|\\.)*"')

openai_endpoint = guarded(render)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def json_response(body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


async def _body(request: Request) -> bytes:
    return await read_body(request, services_of(request).settings.max_request_bytes)


@openai_endpoint
async def list_models(request: Request) -> Response:
    services = services_of(request)
    services.registry.refresh()
    principal = principal_of(request)
    data = [_card(services, s.id) for s in services.manager.statuses() if principal.rights.may_use(s.id)]
    return json_response({"object": "list", "data": data})


@openai_endpoint
async def get_model(request: Request) -> Response:
    services = services_of(request)
    spec = services.registry.get(request.path_params["model_id"])
    principal_of(request).require_model(spec.id)
    return json_response(_card(services, spec.id))


def _card(services: Services, model_id: str) -> dict[str, object]:
    spec = services.registry.get(model_id)
    try:
        created = int(spec.path.stat().st_mtime) if spec.path is not None else int(services.started_at)
    except OSError:
        created = int(services.started_at)
    return encode.model_card(
        model_id, created, status=services.manager.state(model_id).value, aliases=list(spec.entry.aliases)
    )


async def _ending_in_errors(request: Request, call: Call, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The events, counted, then `[DONE]`; if they fail, one final error event instead (a stream cannot change
    its status any more)."""
    try:
        async for data in events:
            call.ticket.bytes_out += len(data)
            yield data
        call.completed = True
        call.ticket.bytes_out += len(encode.DONE_EVENT)
        yield encode.DONE_EVENT
    except SomnerError as exc:
        call.error_status = exc.status
        yield encode.error_event(exc)
    except Exception:
        log.exception("stream failed [%s]", request_id(request))
        call.error_status = 500
        yield encode.error_event(internal_error(request))


def _stream(
    request: Request, call: Call, events: AsyncIterator[bytes], *closers: ChunkStream | PassThrough
) -> Response:
    async def done() -> None:
        try:
            for closer in closers:
                await closer.aclose()  # type: ignore[union-attr]
        finally:
            call.close_stream()

    return event_stream(_ending_in_errors(request, call, events), on_close=done, headers=call.ticket.headers)


async def _pass_through(
    request: Request, call: Call, opening: Awaitable[PassThrough], model: str, include_usage: bool
) -> Response:
    """Stream an OpenAI-speaking engine's events to an OpenAI client unchanged (but for the model name, when the
    engine calls it otherwise, and the usage event, when the client did not ask for it)."""
    try:
        events = await opening
    except BaseException as exc:
        fail(call, exc)
        raise
    client_name = orjson.dumps({"model": model})[1:-1]
    ticket = call.ticket
    if events.prompt_tokens is not None:
        ticket.usage.prompt_tokens = events.prompt_tokens

    async def body() -> AsyncIterator[bytes]:
        async for data in events:
            if PassThrough.has_content(data):
                ticket.first_token()
                ticket.usage.completion_tokens = events.content_events
            if events.usage is not None:
                ticket.usage = events.usage
                if not include_usage and PassThrough.is_usage_only(data):
                    continue
            # The engine may call the model by another name (an alias, an upstream's own name); clients see theirs.
            yield b"data: " + (data if client_name in data else _MODEL_FIELD.sub(client_name, data, count=1)) + b"\n\n"

    return _stream(request, call, body(), events)


async def _collect(call: Call, stream: ChunkStream) -> tuple[str, Chunk, list[TokenLogprob] | None]:
    parts: list[str] = []
    logprobs: list[TokenLogprob] | None = None
    last = Chunk()
    async for chunk in stream:
        call.observe(chunk)
        parts.append(chunk.text)
        if chunk.logprobs:
            logprobs = (logprobs or []) + chunk.logprobs
        last = chunk
    return "".join(parts), last, logprobs


async def _close(stream: ChunkStream) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _prompt_tokens(call: Call, stream: ChunkStream) -> None:
    known = getattr(stream, "prompt_tokens", None)
    if isinstance(known, int):
        call.ticket.usage.prompt_tokens += known


@openai_endpoint
async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    raw = await _body(request)
    wire = decode.parse(schemas.ChatCompletionRequest, raw)
    core = decode.chat_request(wire)
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    call = await begin(
        request,
        services,
        model=core.model,
        dialect="openai",
        route="chat",
        bytes_in=len(raw),
        max_tokens=core.sampling.max_tokens,
        messages=len(core.messages),
        keep=keep_alive(request, wire.keep_alive),
        prompt_text=orjson.dumps([{"role": m.role, "content": m.content} for m in core.messages]).decode(),
    )
    defaults.apply_to_chat(core, call.spec.entry.defaults)
    backend = call.lease.backend
    if core.stream and isinstance(backend, SpeaksOpenAI) and call.prompt_text is None:
        return await _pass_through(request, call, backend.chat_events(core), core.model, include_usage)
    try:
        stream = await backend.chat(core)
    except BaseException as exc:
        fail(call, exc)
        raise
    _prompt_tokens(call, stream)
    if core.stream:
        encoder = encode.ChatStream(core.model, include_usage=include_usage)

        async def events() -> AsyncIterator[bytes]:
            yield encoder.start()
            async for chunk in stream:
                call.observe(chunk)
                yield encoder.chunk(chunk)

        return _stream(request, call, events(), stream)
    try:
        text, last, logprobs = await until_disconnected(request, _collect(call, stream))
    except BaseException as exc:
        await _close(stream)
        fail(call, exc)
        raise
    call.close(200)
    return json_response(encode.chat_completion(core.model, text, last, logprobs), call.ticket.headers)


@openai_endpoint
async def completions(request: Request) -> Response:
    services = services_of(request)
    raw = await _body(request)
    wire = decode.parse(schemas.CompletionRequest, raw)
    cores = decode.completion_requests(wire)
    model = wire.model
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    call = await begin(
        request,
        services,
        model=model,
        dialect="openai",
        route="completions",
        bytes_in=len(raw),
        max_tokens=wire.max_tokens,
        keep=keep_alive(request, wire.keep_alive),
        prompt_text=orjson.dumps([c.prompt for c in cores]).decode(),
    )
    for core in cores:
        defaults.apply_to_completion(core, call.spec.entry.defaults)
    backend = call.lease.backend
    if wire.stream and len(cores) == 1 and isinstance(backend, SpeaksOpenAI) and call.prompt_text is None:
        return await _pass_through(request, call, backend.complete_events(cores[0]), model, include_usage)
    streams: list[ChunkStream] = []
    try:
        for core in cores:
            streams.append(await backend.complete(core))
            _prompt_tokens(call, streams[-1])
    except BaseException as exc:
        for stream in streams:
            await _close(stream)
        fail(call, exc)
        raise
    if wire.stream:
        encoder = encode.CompletionStream(model, include_usage=include_usage)

        async def events() -> AsyncIterator[bytes]:
            total = Usage()
            async for index, chunk in merge(streams):
                total.add(chunk.usage)
                call.observe(Chunk(text=chunk.text))
                data = encoder.chunk(chunk, index)
                if data:
                    yield data
            call.ticket.usage = total
            if encoder.include_usage:
                yield encoder.usage_event(total)

        return _stream(request, call, events(), *streams)
    try:
        results = await until_disconnected(request, gather_all([_collect(call, s) for s in streams]))
    except BaseException as exc:
        for stream in streams:
            await _close(stream)
        fail(call, exc)
        raise
    total = Usage()
    for _, last, _ in results:
        total.add(last.usage)
    call.ticket.usage = total
    call.close(200)
    return json_response(encode.completion(model, results), call.ticket.headers)


@openai_endpoint
async def embeddings(request: Request) -> Response:
    services = services_of(request)
    raw = await _body(request)
    wire = decode.parse(schemas.EmbeddingRequest, raw)
    inputs = decode.embedding_inputs(wire)
    call = await begin(
        request,
        services,
        model=wire.model,
        dialect="openai",
        route="embeddings",
        bytes_in=len(raw),
        keep=keep_alive(request, wire.keep_alive),
    )
    try:
        result = await until_disconnected(
            request, call.lease.backend.embed(EmbeddingRequest(model=wire.model, inputs=inputs, user=wire.user))
        )
    except BaseException as exc:
        fail(call, exc)
        raise
    call.ticket.usage = Usage(prompt_tokens=result.prompt_tokens)
    if wire.dimensions is not None and result.embeddings and wire.dimensions != len(result.embeddings[0]):
        error = BadRequest(
            f"This model's embeddings have {len(result.embeddings[0])} dimensions; 'dimensions' cannot change that.",
            param="dimensions",
        )
        call.close(error.status)
        raise error
    call.close(200)
    body = encode.embeddings(wire.model, result.embeddings, result.prompt_tokens, wire.encoding_format)
    return json_response(body, call.ticket.headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
