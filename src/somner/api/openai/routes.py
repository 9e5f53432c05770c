"""OpenAI-compatible routes: models, chat completions, completions, embeddings.

Each handler parses the body into its wire schema and a core request, then `serving` admits it and leases
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

from somner.api import serving
from somner.api.errors import guarded
from somner.api.handlers import json_response, read_request, services_of
from somner.api.keep_alive import keep_alive
from somner.api.openai.render import render
from somner.api.principal import principal_of
from somner.api.serving import Call, begin, fail
from somner.api.streaming import until_disconnected
from somner.core import Chunk, EmbeddingRequest, Usage
from somner.core.streams import collect, gather_all, merge
from somner.errors import BadRequest
from somner.models.backends.base import SpeaksOpenAI
from somner.models.backends.openai_http import PassThrough
from somner.services import Services
from somner.wire.openai import decode, encode, schemas

log = logging.getLogger(__name__)

_MODEL_FIELD = re.compile(rb'"model":"(?:[^"\\]|\\.)*"')

openai_endpoint = guarded(render)


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


def _stream(request: Request, call: Call, events: AsyncIterator[bytes], *closers: object) -> Response:
    return serving.streamed(request, call, events, *closers, error_event=encode.error_event, trailer=encode.DONE_EVENT)


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


@openai_endpoint
async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.ChatCompletionRequest, raw)
    core = decode.chat_request(wire)
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    admission = serving.Admission(
        dialect="openai",
        route="chat",
        bytes_in=len(raw),
        keep=keep_alive(request, wire.keep_alive),
        prompt_text=orjson.dumps([{"role": m.role, "content": m.content} for m in core.messages]).decode(),
    )
    call = await serving.begin_chat(request, services, core, admission)
    backend = call.lease.backend
    if core.stream and isinstance(backend, SpeaksOpenAI) and call.prompt_text is None:
        return await _pass_through(request, call, backend.chat_events(core), core.model, include_usage)
    stream = await serving.open_chat(call, core)
    if core.stream:
        encoder = encode.ChatStream(core.model, include_usage=include_usage)

        async def events() -> AsyncIterator[bytes]:
            yield encoder.start()
            async for chunk in serving.observed(call, stream):
                yield encoder.chunk(chunk)

        return _stream(request, call, events(), stream)
    reply = await serving.collected(request, call, stream)
    body = encode.chat_completion(core.model, reply.text, reply.last, reply.logprobs, calls=reply.tool_calls.calls())
    return json_response(body, call.ticket.headers)


@openai_endpoint
async def completions(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.CompletionRequest, raw)
    cores = decode.completion_requests(wire)
    model = wire.model
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    admission = serving.Admission(
        dialect="openai",
        route="completions",
        bytes_in=len(raw),
        keep=keep_alive(request, wire.keep_alive),
        prompt_text=orjson.dumps([c.prompt for c in cores]).decode(),
    )
    call = await serving.begin_completion(request, services, cores, admission)
    backend = call.lease.backend
    if wire.stream and len(cores) == 1 and isinstance(backend, SpeaksOpenAI) and call.prompt_text is None:
        return await _pass_through(request, call, backend.complete_events(cores[0]), model, include_usage)
    streams = await serving.open_completions(call, cores)
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
        results = await until_disconnected(request, gather_all([collect(s, call.observe) for s in streams]))
    except BaseException as exc:
        for stream in streams:
            await serving.close_stream(stream)
        serving.fail(call, exc)
        raise
    total = Usage()
    for result in results:
        total.add(result.last.usage)
    call.ticket.usage = total
    call.close(200)
    return json_response(encode.completion(model, results), call.ticket.headers)


@openai_endpoint
async def embeddings(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
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
