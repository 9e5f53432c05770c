"""OpenAI-compatible routes: models, chat completions, completions, embeddings.

Each handler parses the body into its wire schema and a core request, then `serving` admits it and leases
the model. Streams from an engine that speaks OpenAI pass through unparsed; other engines' chunks are encoded here.
However a request ends, its `Call` is closed once (lease released, usage recorded).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

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
from somner.core.streams import collect_choices, gather_all, merge, total_usage
from somner.errors import BadRequest
from somner.models.backends.base import RelaysReplies, SpeaksOpenAI
from somner.models.backends.passthrough import PassThrough, Reply, rename_model, without_usage_event
from somner.services import Services
from somner.wire.openai import decode, encode, schemas

log = logging.getLogger(__name__)

openai_endpoint = guarded(render)


@openai_endpoint
async def list_models(request: Request) -> Response:
    services = services_of(request)
    services.registry.refresh()
    principal = principal_of(request)
    await services.capabilities.read_ahead(services.registry.specs())
    data = [_card(services, s.id) for s in services.manager.statuses() if principal.rights.may_use(s.id)]
    return json_response({"object": "list", "data": data})


@openai_endpoint
async def get_model(request: Request) -> Response:
    services = services_of(request)
    spec = services.registry.get(request.path_params["model_id"])
    principal_of(request).require_model(spec.id)
    await services.capabilities.read_ahead([spec])
    return json_response(_card(services, spec.id))


def _card(services: Services, model_id: str) -> dict[str, object]:
    spec = services.registry.get(model_id)
    try:
        created = int(spec.path.stat().st_mtime) if spec.path is not None else int(services.started_at)
    except OSError:
        created = int(services.started_at)
    return encode.model_card(
        model_id,
        created,
        status=services.manager.state(model_id).value,
        aliases=list(spec.entry.aliases),
        capabilities=services.capabilities.of(spec).listed(),
    )


def _stream(request: Request, call: Call, events: AsyncIterator[bytes], *closers: object) -> Response:
    return serving.streamed(request, call, events, *closers, error_event=encode.error_event, trailer=encode.DONE_EVENT)


async def _pass_through(
    request: Request, call: Call, open_: Callable[[Any], Awaitable[PassThrough]], model: str, include_usage: bool
) -> Response:
    """Relay an OpenAI-speaking engine's events to an OpenAI client as its bytes (but for the model name, when the
    engine calls it otherwise, and the usage event, when the client did not ask for it)."""
    try:
        events = serving.resumable(call, await call.on_engine(open_), open_)
    except BaseException as exc:
        fail(call, exc)
        raise
    client_name = orjson.dumps({"model": model})[1:-1]
    ticket = call.ticket
    if events.prompt_tokens is not None:
        ticket.usage.prompt_tokens = events.prompt_tokens

    async def body() -> AsyncIterator[bytes]:
        renamed: bool | None = None
        async for relayed in events:
            blob = relayed
            call.lease.progress()  # (the lease changes if the stream moved to a fresh engine)
            if events.usage is None:
                if events.content_events:
                    ticket.first_token()
                    ticket.usage.completion_tokens = events.content_events
            else:
                ticket.first_token()
                ticket.usage = events.usage
                if not include_usage:
                    blob = without_usage_event(blob)
            if renamed is None:  # the engine may call the model by another name (an alias, an upstream's own)
                renamed = client_name not in blob
            if renamed:
                blob = rename_model(blob, client_name)
            if blob:
                yield blob

    return _stream(request, call, body(), events)


async def _relay_reply(request: Request, call: Call, open_: Callable[[Any], Awaitable[Reply]], model: str) -> Response:
    """An OpenAI-speaking remote engine's whole answer, to an OpenAI client as its bytes (model name aside)."""
    try:
        reply = await until_disconnected(request, call.on_engine(open_))
    except BaseException as exc:
        fail(call, exc)
        raise
    call.lease.progress()
    call.ticket.usage = reply.usage
    call.close(200)
    client_name = orjson.dumps({"model": model})[1:-1]
    body = reply.body if client_name in reply.body else rename_model(reply.body, client_name)
    return Response(body, media_type="application/json", headers=call.ticket.headers)


@openai_endpoint
async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.ChatCompletionRequest, raw)
    core = decode.chat_request(wire)
    legacy = decode.uses_functions(wire)  # answered in the legacy shape, so never relayed as the engine's bytes
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
    if call.prompt_text is None and not legacy:  # (requests whose text is logged take the decoding path)
        if core.stream and isinstance(backend, SpeaksOpenAI):
            return await _pass_through(request, call, lambda b: b.chat_events(core), core.model, include_usage)
        if not core.stream and isinstance(backend, RelaysReplies):
            return await _relay_reply(request, call, lambda b: b.chat_reply(core), core.model)
    stream = await serving.open_chat(call, core)
    if core.stream:
        encoder = encode.ChatStream(core.model, include_usage=include_usage, legacy_functions=legacy)

        async def events() -> AsyncIterator[bytes]:
            yield encoder.start(core.n)
            async for chunk in serving.observed(call, stream):
                yield encoder.chunk(chunk)

        return _stream(request, call, events(), stream)
    if core.n > 1:
        replies = await serving.collected_choices(request, call, stream, core.n)
        body = encode.chat_completion_choices(core.model, replies, call.ticket.usage, legacy_functions=legacy)
        return json_response(body, call.ticket.headers)
    reply = await serving.collected(request, call, stream)
    body = encode.chat_completion(
        core.model,
        reply.text,
        reply.last,
        reply.logprobs,
        calls=reply.tool_calls.calls(),
        legacy_functions=legacy,
        reasoning=reply.reasoning,
    )
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
    if len(cores) == 1 and call.prompt_text is None:
        if wire.stream and isinstance(backend, SpeaksOpenAI):
            return await _pass_through(request, call, lambda b: b.complete_events(cores[0]), model, include_usage)
        if not wire.stream and isinstance(backend, RelaysReplies):
            return await _relay_reply(request, call, lambda b: b.complete_reply(cores[0]), model)
    streams = await serving.open_completions(call, cores)
    choices = cores[0].n  # (prompt p's choice i is choice p * n + i of the answer)
    if wire.stream:
        encoder = encode.CompletionStream(model, include_usage=include_usage)

        async def events() -> AsyncIterator[bytes]:
            total = Usage()
            async for prompt, chunk in merge(streams):
                total.add(chunk.usage)
                call.observe(Chunk(text=chunk.text))
                data = encoder.chunk(chunk, prompt * choices + chunk.index)
                if data:
                    yield data
            call.ticket.usage = total
            if encoder.include_usage:
                yield encoder.usage_event(total)

        return _stream(request, call, events(), *streams)
    try:
        per_prompt = await until_disconnected(
            request, gather_all([collect_choices(s, choices, call.observe) for s in streams])
        )
    except BaseException as exc:
        for stream in streams:
            await serving.close_stream(stream)
        serving.fail(call, exc)
        raise
    results = [result for replies in per_prompt for result in replies]
    call.ticket.usage = total_usage(results)
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
        embedding = EmbeddingRequest(model=wire.model, inputs=inputs, user=wire.user)
        result = await until_disconnected(request, call.on_engine(lambda backend: backend.embed(embedding)))
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
