"""OpenAI-compatible routes: models, chat completions, completions, embeddings.

Each handler: parse the body into its wire schema, convert to a core request, take a lease on the model,
open the backend's stream (errors so far become an OpenAI error response), then stream or collect.
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
from somner.api.streaming import event_stream, shielded, until_disconnected
from somner.core import Chunk, EmbeddingRequest, TokenLogprob, Usage
from somner.core.streams import gather_all, merge
from somner.errors import BadRequest, SomnerError
from somner.models import defaults
from somner.models.backends.base import ChunkStream, SpeaksOpenAI
from somner.models.backends.openai_http import PassThrough
from somner.models.manager import Lease
from somner.services import Services
from somner.wire.openai import decode, encode, schemas

log = logging.getLogger(__name__)


_MODEL_FIELD = re.compile(rb'"model":"(?:[^"\\]|\\.)*"')


def render(error: SomnerError) -> Response:
    return Response(
        orjson.dumps(encode.error_body(error)),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


openai_endpoint = guarded(render)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def json_response(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def _body(request: Request) -> bytes:
    return await read_body(request, services_of(request).settings.max_request_bytes)


@openai_endpoint
async def list_models(request: Request) -> Response:
    services = services_of(request)
    services.registry.refresh()
    data = [_card(services, status.id) for status in services.manager.statuses()]
    return json_response({"object": "list", "data": data})


@openai_endpoint
async def get_model(request: Request) -> Response:
    services = services_of(request)
    spec = services.registry.get(request.path_params["model_id"])
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


async def _collect(stream: ChunkStream) -> tuple[str, Chunk, list[TokenLogprob] | None]:
    parts: list[str] = []
    logprobs: list[TokenLogprob] | None = None
    last = Chunk()
    async for chunk in stream:
        parts.append(chunk.text)
        if chunk.logprobs:
            logprobs = (logprobs or []) + chunk.logprobs
        last = chunk
    return "".join(parts), last, logprobs


async def _ending_in_errors(request: Request, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The events, then, if they fail, one final error event (a stream cannot change its status any more)."""
    try:
        async for data in events:
            yield data
    except SomnerError as exc:
        yield encode.error_event(exc)
    except Exception:
        log.exception("stream failed [%s]", request_id(request))
        yield encode.error_event(internal_error(request))


async def _pass_through(
    request: Request,
    lease: Lease,
    opening: Awaitable[PassThrough],
    model: str,
    include_usage: bool,
    keep: float | None,
) -> Response:
    """Stream an OpenAI-speaking engine's events to an OpenAI client unchanged (but for the model name, when the
    client used another name for it, and the usage event, when the client did not ask for it)."""
    try:
        events = await opening
    except BaseException:
        lease.release(keep)
        raise
    client_name = orjson.dumps({"model": model})[1:-1]

    def renamed(data: bytes) -> bytes:
        # The engine may call the model by another name (an alias, an upstream's own name); clients see theirs.
        return data if client_name in data else _MODEL_FIELD.sub(client_name, data, count=1)

    async def body() -> AsyncIterator[bytes]:
        async for data in events:
            if not include_usage and PassThrough.is_usage_only(data):
                continue
            yield b"data: " + renamed(data) + b"\n\n"
        yield encode.DONE_EVENT

    async def done() -> None:
        try:
            await events.aclose()
        finally:
            lease.release(keep)

    return event_stream(_ending_in_errors(request, body()), on_close=done)


async def _close(stream: ChunkStream) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


@openai_endpoint
async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    wire = decode.parse(schemas.ChatCompletionRequest, await _body(request))
    core = decode.chat_request(wire)
    keep = keep_alive(request, wire.keep_alive)
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    lease = await services.manager.acquire(core.model)
    defaults.apply_to_chat(core, lease.spec.entry.defaults)
    if core.stream and isinstance(lease.backend, SpeaksOpenAI):
        return await _pass_through(request, lease, lease.backend.chat_events(core), core.model, include_usage, keep)
    try:
        stream = await lease.backend.chat(core)
    except BaseException:
        lease.release(keep)
        raise
    if core.stream:
        encoder = encode.ChatStream(core.model, include_usage=include_usage)

        async def events() -> AsyncIterator[bytes]:
            yield encoder.start()
            async for chunk in stream:
                yield encoder.chunk(chunk)
            yield encode.DONE_EVENT

        async def done() -> None:
            try:
                await _close(stream)
            finally:
                lease.release(keep)

        return event_stream(_ending_in_errors(request, events()), on_close=done)
    try:
        text, last, logprobs = await until_disconnected(request, _collect(stream))
    finally:
        await shielded(lambda: _close(stream))
        lease.release(keep)
    return json_response(encode.chat_completion(core.model, text, last, logprobs))


@openai_endpoint
async def completions(request: Request) -> Response:
    services = services_of(request)
    wire = decode.parse(schemas.CompletionRequest, await _body(request))
    cores = decode.completion_requests(wire)
    model = wire.model
    keep = keep_alive(request, wire.keep_alive)
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    lease = await services.manager.acquire(model)
    for core in cores:
        defaults.apply_to_completion(core, lease.spec.entry.defaults)
    if wire.stream and len(cores) == 1 and isinstance(lease.backend, SpeaksOpenAI):
        opening = lease.backend.complete_events(cores[0])
        return await _pass_through(request, lease, opening, model, include_usage, keep)
    streams: list[ChunkStream] = []

    async def cleanup() -> None:
        for stream in streams:
            await _close(stream)

    try:
        for core in cores:
            streams.append(await lease.backend.complete(core))
    except BaseException:
        await shielded(cleanup)
        lease.release(keep)
        raise

    if wire.stream:
        encoder = encode.CompletionStream(model, include_usage=include_usage)

        async def events() -> AsyncIterator[bytes]:
            total = Usage()
            async for index, chunk in merge(streams):
                total.add(chunk.usage)
                data = encoder.chunk(chunk, index)
                if data:
                    yield data
            yield encoder.usage_event(total)
            yield encode.DONE_EVENT

        async def done() -> None:
            try:
                await cleanup()
            finally:
                lease.release(keep)

        return event_stream(_ending_in_errors(request, events()), on_close=done)
    try:
        results = await until_disconnected(request, gather_all([_collect(s) for s in streams]))
    finally:
        await shielded(cleanup)
        lease.release(keep)
    return json_response(encode.completion(model, results))


@openai_endpoint
async def embeddings(request: Request) -> Response:
    services = services_of(request)
    wire = decode.parse(schemas.EmbeddingRequest, await _body(request))
    inputs = decode.embedding_inputs(wire)
    keep = keep_alive(request, wire.keep_alive)
    lease = await services.manager.acquire(wire.model)
    try:
        result = await until_disconnected(
            request, lease.backend.embed(EmbeddingRequest(model=wire.model, inputs=inputs, user=wire.user))
        )
    finally:
        lease.release(keep)
    if wire.dimensions is not None and result.embeddings and wire.dimensions != len(result.embeddings[0]):
        raise BadRequest(
            f"This model's embeddings have {len(result.embeddings[0])} dimensions; 'dimensions' cannot change that.",
            param="dimensions",
        )
    return json_response(encode.embeddings(wire.model, result.embeddings, result.prompt_tokens, wire.encoding_format))


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
