"""KoboldAI-compatible routes, as KoboldCpp serves them (`/api/v1/...` and its `/api/extra/...`).

Kobold requests name no model: they use the server's default model (`--model`, or the only one), unless a body
gives the `model` extension. A generation is a raw completion of its prompt (memory first), fitted into the
model's context as KoboldCpp fits it (`context.fit`), admitted and accounted for by `serving` like every other
dialect's. While it runs it is in `services.generations`, under the caller's identity and its `genkey`, so that
the caller (and only the caller) can abort it or read its text so far. Abort and check are control requests:
they need a key but spend no rate limit (front ends poll `check` while they wait).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api import serving
from somner.api.errors import guarded
from somner.api.handlers import json_response, read_request, services_of
from somner.api.kobold import context
from somner.api.kobold.render import render
from somner.api.principal import lane_of
from somner.api.serving import Call
from somner.api.streaming import until_disconnected
from somner.core import Chunk
from somner.gateway.generations import Generation
from somner.models.backends.base import ChunkStream
from somner.wire.kobold import decode, encode, schemas
from somner.wire.kobold.decode import KoboldGeneration

kobold_endpoint = guarded(render)


# -- what the server is ---------------------------------------------------------------------------------


@kobold_endpoint
async def model(request: Request) -> Response:
    return json_response(encode.model_name(serving.default_model(services_of(request))))


@kobold_endpoint
async def api_version(request: Request) -> Response:
    return json_response({"result": encode.KOBOLD_API_VERSION})


@kobold_endpoint
async def extra_version(request: Request) -> Response:
    return json_response(encode.extra_version(protected=services_of(request).settings.auth.enabled))


@kobold_endpoint
async def max_context_length(request: Request) -> Response:
    services = services_of(request)
    spec = services.registry.get(serving.default_model(services))
    return json_response({"value": context.model_context(spec)})


@kobold_endpoint
async def max_length(request: Request) -> Response:
    services = services_of(request)
    spec = services.registry.get(serving.default_model(services))
    return json_response({"value": context.default_max_length(spec)})


# -- generations ----------------------------------------------------------------------------------------


async def _start(request: Request, *, stream: bool) -> tuple[Call, ChunkStream, KoboldGeneration, Generation]:
    """Parse, register, admit, fit and open a generation. It is registered before admission, so an abort that
    arrives while it waits in the queue still stops it (it then ends at once, with no text)."""
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.GenerateRequest, raw)
    job = decode.generation(wire, wire.model or serving.default_model(services), stream=stream)
    generation = services.generations.start(lane_of(request), job.genkey)
    try:
        admission = serving.Admission(
            dialect="kobold", route="generate", bytes_in=len(raw), prompt_text=job.memory + job.prompt
        )
        call = await serving.begin_completion(request, services, [job.core], admission)
        try:
            await until_disconnected(request, context.fit(job, call.spec, serving.tokenizer_if_any(call)))
        except BaseException as exc:
            serving.fail(call, exc)
            raise
        (engine,) = await serving.open_completions(call, [job.core])
    except BaseException:
        generation.finish()
        raise
    return call, engine, job, generation


def _untrimmed(job: KoboldGeneration, last: Chunk | None) -> str:
    """With `trim_stop: false`, KoboldCpp leaves the stop sequence that ended the text in it; engines cut it."""
    if job.trim_stop or last is None or last.stop_sequence is None:
        return ""
    return last.stop_sequence


@kobold_endpoint
async def generate(request: Request) -> Response:
    call, engine, job, generation = await _start(request, stream=False)
    try:
        reply = await serving.collected(request, call, generation.watch(engine))
    finally:
        await serving.close_stream(engine)  # (already closed unless the watch never started)
        generation.finish()
    text = reply.text + _untrimmed(job, reply.last)
    return json_response(encode.generation(text, reply.last.finish_reason), call.ticket.headers)


@kobold_endpoint
async def generate_stream(request: Request) -> Response:
    call, engine, job, generation = await _start(request, stream=True)

    async def events() -> AsyncIterator[bytes]:
        last: Chunk | None = None
        async for chunk in serving.observed(call, generation.watch(engine)):
            if chunk.text:
                yield encode.token_event(chunk.text)
            if chunk.finish_reason is not None:
                last = chunk
        stop = _untrimmed(job, last)
        if stop:
            yield encode.token_event(stop)
        yield encode.final_event(last.finish_reason if last is not None else None)

    return serving.streamed(request, call, events(), engine, generation, error_event=encode.error_event)


# -- the caller's generations -----------------------------------------------------------------------------


@kobold_endpoint
async def abort(request: Request) -> Response:
    wire = decode.genkey_request(await read_request(request))
    aborted = services_of(request).generations.abort(lane_of(request), wire.genkey or None)
    return json_response({"success": aborted > 0})


@kobold_endpoint
async def check(request: Request) -> Response:
    raw = await read_request(request) if request.method == "POST" else b""
    wire = decode.genkey_request(raw)
    current = services_of(request).generations.current(lane_of(request), wire.genkey or None)
    return json_response(encode.partial(current.text if current is not None else ""))


# -- tokens ---------------------------------------------------------------------------------------------


@kobold_endpoint
async def token_count(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.TokenCountRequest, raw)
    call = await serving.tokenizing(request, services, wire.model, "kobold", len(raw))
    try:
        tokenizer = serving.tokenizer_of(call)
        ids = await until_disconnected(request, tokenizer.tokenize(wire.prompt, add_special=wire.special))
    except BaseException as exc:
        serving.fail(call, exc)
        raise
    call.close(200)
    return json_response({"value": len(ids), "ids": ids}, call.ticket.headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/model", model, methods=["GET"]),
        Route("/api/v1/info/version", api_version, methods=["GET"]),
        Route("/api/extra/version", extra_version, methods=["GET"]),
        Route("/api/v1/config/max_context_length", max_context_length, methods=["GET"]),
        Route("/api/v1/config/max_length", max_length, methods=["GET"]),
        Route("/api/v1/generate", generate, methods=["POST"]),
        Route("/api/extra/generate/stream", generate_stream, methods=["POST"]),
        Route("/api/extra/generate/check", check, methods=["GET", "POST"]),
        Route("/api/extra/abort", abort, methods=["POST"]),
        Route("/api/extra/tokencount", token_count, methods=["POST"]),
    ]
