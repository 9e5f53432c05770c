"""Ollama's generation routes: `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`.

Every generation goes through `somner.api.serving` (admission, limits, queue, model lease, usage record), as in
every dialect. Streams are NDJSON lines (Ollama streams unless `stream` is false); a failure midway ends the stream
with an `{"error": ...}` line. A request with nothing to generate (no messages, an empty prompt or input) loads
the model and answers `done_reason` "load", or with `keep_alive` 0 unloads it and answers "unload".
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response

from somner.api import serving
from somner.api.errors import guarded
from somner.api.handlers import json_response, read_request, services_of
from somner.api.keep_alive import keep_alive
from somner.api.ollama import lookup
from somner.api.ollama.render import render
from somner.api.principal import principal_of
from somner.api.serving import Admission, Call
from somner.api.streaming import until_disconnected
from somner.core import ChatRequest, Chunk, CompletionRequest, EmbeddingRequest, Usage
from somner.errors import BadRequest
from somner.models.backends.base import ChunkStream
from somner.models.manager import ModelState
from somner.services import Services
from somner.wire.ollama import decode, encode, schemas

ollama_endpoint = guarded(render)


async def _timed(stream: ChunkStream, timeline: encode.Timeline) -> AsyncIterator[Chunk]:
    """The engine's chunks, with the first token's moment noted; closing this closes the engine's stream."""
    try:
        async for chunk in stream:
            if chunk.text:
                timeline.mark_token()
            yield chunk
    finally:
        await serving.close_stream(stream)


async def _unload_if_idle(services: Services, keep: float | None) -> None:
    """With keep_alive 0 the model expires as the request ends; unload it before answering, not a moment later."""
    if keep == 0:
        await services.manager.reap()


async def _lifecycle(request: Request, services: Services, model: str, admission: Admission, *, chat: bool) -> Response:
    """Load the model (or, with keep_alive 0, unload it if it is loaded) and generate nothing."""
    spec = services.manager.resolve(model)
    reason = "load"
    if admission.keep == 0:
        reason = "unload"
        principal_of(request).require_model(spec.id)
        if services.manager.state(spec.id) is not ModelState.LOADED:
            return json_response(encode.lifecycle_response(model, reason, chat=chat))
    call = await serving.begin(
        request,
        services,
        model=model,
        dialect=admission.dialect,
        route=admission.route,
        bytes_in=admission.bytes_in,
        keep=admission.keep,
    )
    call.close(200)
    await _unload_if_idle(services, admission.keep)
    return json_response(encode.lifecycle_response(model, reason, chat=chat), call.ticket.headers)


def _ndjson(request: Request, call: Call, events: AsyncIterator[bytes], stream: ChunkStream) -> Response:
    return serving.streamed(request, call, events, stream, error_event=encode.error_line, media_type=encode.MEDIA_TYPE)


@ollama_endpoint
async def chat(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.ChatRequest, raw)
    core = decode.chat_request(wire)
    core.model = lookup.model_name(services.registry, wire.model)
    admission = Admission(
        dialect="ollama",
        route="chat",
        bytes_in=len(raw),
        keep=keep_alive(request, wire.keep_alive),
        prompt_text=orjson.dumps([{"role": m.role, "content": m.content} for m in core.messages]).decode(),
    )
    if not core.messages:
        return await _lifecycle(request, services, core.model, admission, chat=True)
    timeline = encode.Timeline()
    call, stream = await _open(request, services, core, admission, timeline)
    if wire.stream:
        encoder = encode.ChatStream(wire.model, timeline)

        async def events() -> AsyncIterator[bytes]:
            async for chunk in serving.observed(call, stream):
                data = encoder.chunk(chunk)
                if data:
                    yield data

        return _ndjson(request, call, events(), stream)
    reply = await serving.collected(request, call, _timed(stream, timeline))
    await _unload_if_idle(services, admission.keep)
    body = encode.chat_response(
        wire.model,
        timeline,
        reply.text,
        reply.last,
        calls=reply.tool_calls.calls(),
        token_logprobs=reply.logprobs,
        thinking=reply.reasoning,
    )
    return json_response(body, call.ticket.headers)


async def _open(
    request: Request,
    services: Services,
    core: ChatRequest | CompletionRequest,
    admission: Admission,
    timeline: encode.Timeline,
) -> tuple[Call, ChunkStream]:
    """Admit and lease (the timeline notes when the model was ready), then open the engine's stream."""
    if isinstance(core, ChatRequest):
        call = await serving.begin_chat(request, services, core, admission)
        timeline.mark_loaded()
        return call, await serving.open_chat(call, core)
    call = await serving.begin_completion(request, services, [core], admission)
    timeline.mark_loaded()
    return call, (await serving.open_completions(call, [core]))[0]


@ollama_endpoint
async def generate(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.GenerateRequest, raw)
    model = lookup.model_name(services.registry, wire.model)
    admission = Admission(
        dialect="ollama",
        route="generate",
        bytes_in=len(raw),
        keep=keep_alive(request, wire.keep_alive),
        prompt_text=orjson.dumps({"system": wire.system, "prompt": wire.prompt}).decode(),
    )
    if decode.is_load_only(wire):
        return await _lifecycle(request, services, model, admission, chat=False)
    core = decode.generate_request(wire)
    core.model = model
    timeline = encode.Timeline()
    call, stream = await _open(request, services, core, admission, timeline)
    if wire.stream:
        encoder = encode.GenerateStream(wire.model, timeline)

        async def events() -> AsyncIterator[bytes]:
            async for chunk in serving.observed(call, stream):
                data = encoder.chunk(chunk)
                if data:
                    yield data

        return _ndjson(request, call, events(), stream)
    reply = await serving.collected(request, call, _timed(stream, timeline))
    await _unload_if_idle(services, admission.keep)
    body = encode.generate_response(
        wire.model, timeline, reply.text, reply.last, token_logprobs=reply.logprobs, thinking=reply.reasoning
    )
    return json_response(body, call.ticket.headers)


def normalized(vectors: list[list[float]], dimensions: int | None) -> list[list[float]]:
    """Unit-length vectors, as Ollama's /api/embed returns them; with `dimensions`, each is first cut to that
    many (for models trained to allow it)."""
    if not vectors:
        return []
    import numpy as np  # (imported on use: the gateway needs it only for embeddings)

    matrix = np.asarray(vectors, dtype=np.float64)
    if dimensions is not None:
        if dimensions > matrix.shape[1]:
            raise BadRequest(
                f"This model's embeddings have {matrix.shape[1]} dimensions; 'dimensions' cannot exceed that.",
                param="dimensions",
            )
        matrix = matrix[:, :dimensions]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    result: list[list[float]] = (matrix / np.where(norms == 0, 1.0, norms)).tolist()
    return result


async def _embed(
    request: Request, services: Services, model: str, inputs: list[str], keep: float | None, bytes_in: int
) -> tuple[Call, list[list[float]], encode.Timeline]:
    """Admit, lease, embed; the call is closed on failure, left open on success (the caller closes it)."""
    timeline = encode.Timeline()
    call = await serving.begin(
        request, services, model=model, dialect="ollama", route="embeddings", bytes_in=bytes_in, keep=keep
    )
    timeline.mark_loaded()
    if not inputs:
        return call, [], timeline
    try:
        embedding = EmbeddingRequest(model=model, inputs=inputs)
        result = await until_disconnected(request, call.on_engine(lambda backend: backend.embed(embedding)))
    except BaseException as exc:
        serving.fail(call, exc)
        raise
    call.ticket.usage = Usage(prompt_tokens=result.prompt_tokens)
    return call, result.embeddings, timeline


@ollama_endpoint
async def embed(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.EmbedRequest, raw)
    inputs = decode.embed_inputs(wire.input)
    model = lookup.model_name(services.registry, wire.model)
    keep = keep_alive(request, wire.keep_alive)
    call, vectors, timeline = await _embed(request, services, model, inputs, keep, len(raw))
    try:
        shaped = normalized(vectors, wire.dimensions)
    except BadRequest as exc:
        call.close(exc.status)
        raise
    call.close(200)
    await _unload_if_idle(services, keep)
    body = encode.embed_response(wire.model, shaped, timeline, call.ticket.usage.prompt_tokens)
    return json_response(body, call.ticket.headers)


@ollama_endpoint
async def embeddings(request: Request) -> Response:
    """The legacy endpoint: one prompt, one vector, as the engine gives it (not normalized, as in Ollama)."""
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.EmbeddingsRequest, raw)
    model = lookup.model_name(services.registry, wire.model)
    keep = keep_alive(request, wire.keep_alive)
    call, vectors, _timeline = await _embed(
        request, services, model, [wire.prompt] if wire.prompt else [], keep, len(raw)
    )
    call.close(200)
    await _unload_if_idle(services, keep)
    return json_response({"embedding": vectors[0] if vectors else []}, call.ticket.headers)
