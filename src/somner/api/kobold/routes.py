"""KoboldAI-compatible routes, as KoboldCpp serves them (`/api/v1/...` and its `/api/extra/...`).

Kobold requests name no model: they use the server's default model (`--model`, or the only one), unless a body
gives the `model` extension. A generation is a raw completion of its prompt (memory first), fitted into the
model's context as KoboldCpp fits it (`context.fit`), admitted and accounted for by `serving` like every other
dialect's. While it runs it is in `services.generations`, under the caller's identity and its `genkey`, so that
the caller (and only the caller) can abort it or read its text so far. Abort and check are control requests:
they need a key but spend no rate limit (front ends poll `check` while they wait). When it ends, its sizes and
speeds are kept as the caller's last generation, for `/api/extra/perf` (`perf`).

KoboldCpp answers a few of the KoboldAI paths under `/api/latest/...` too (model, config, version, generate);
those aliases, and no others, are served here (`_LATEST`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api import serving
from somner.api.errors import guarded
from somner.api.handlers import json_response, read_request, services_of
from somner.api.keep_alive import keep_alive
from somner.api.kobold import context, perf
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


@kobold_endpoint
async def soft_prompt(request: Request) -> Response:
    """Soft prompts are a KoboldAI feature KoboldCpp (and Somner) lacks: none is set, none exists."""
    return json_response({"value": ""})


@kobold_endpoint
async def soft_prompts_list(request: Request) -> Response:
    return json_response({"values": []})


@kobold_endpoint
async def server_perf(request: Request) -> Response:
    return json_response(perf.body(services_of(request), lane_of(request)))


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
            dialect="kobold",
            route="generate",
            bytes_in=len(raw),
            keep=keep_alive(request, None),  # (Kobold bodies have no keep_alive: only Somner's header sets it)
            prompt_text=job.memory + job.prompt,
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


async def _timed(chunks: AsyncGenerator[Chunk], watch: perf.Stopwatch) -> AsyncGenerator[Chunk]:
    """The chunks, seen by the stopwatch; closing this closes `chunks` (and so the engine's stream)."""
    try:
        async for chunk in chunks:
            watch.see(chunk)
            yield chunk
    finally:
        await chunks.aclose()


def _record(request: Request, call: Call, job: KoboldGeneration, watch: perf.Stopwatch) -> None:
    finished = watch.finished(call.ticket.usage, job.core.sampling.seed)
    services_of(request).generations.record(lane_of(request), finished)


def _untrimmed(job: KoboldGeneration, last: Chunk | None) -> str:
    """With `trim_stop: false`, KoboldCpp leaves the stop sequence that ended the text in it; engines cut it."""
    if job.trim_stop or last is None or last.stop_sequence is None:
        return ""
    return last.stop_sequence


@kobold_endpoint
async def generate(request: Request) -> Response:
    call, engine, job, generation = await _start(request, stream=False)
    watch = perf.Stopwatch()
    try:
        reply = await serving.collected(request, call, _timed(generation.watch(engine), watch))
    finally:
        await serving.close_stream(engine)  # (already closed unless the watch never started)
        generation.finish()
    _record(request, call, job, watch)
    text = reply.text + _untrimmed(job, reply.last)
    logprobs = (reply.logprobs or []) if job.logprobs else None
    return json_response(encode.generation(text, reply.last.finish_reason, logprobs), call.ticket.headers)


@kobold_endpoint
async def generate_stream(request: Request) -> Response:
    call, engine, job, generation = await _start(request, stream=True)
    watch = perf.Stopwatch()

    async def events() -> AsyncIterator[bytes]:
        last: Chunk | None = None
        async for chunk in serving.observed(call, _timed(generation.watch(engine), watch)):
            if chunk.text:
                yield encode.token_event(chunk.text)
            if chunk.finish_reason is not None:
                last = chunk
        _record(request, call, job, watch)
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
    ids = await serving.tokenized(
        request, call, lambda tokenizer: tokenizer.tokenize(wire.prompt, add_special=wire.special)
    )
    return json_response({"value": len(ids), "ids": ids}, call.ticket.headers)


@kobold_endpoint
async def detokenize(request: Request) -> Response:
    """Token ids to text (`special`: special tokens rendered as text, as by default). Unlike KoboldCpp, which
    skips ids outside the vocabulary, Somner answers 400 naming the first one (the engine's rule)."""
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.DetokenizeRequest, raw)
    call = await serving.tokenizing(request, services, wire.model, "kobold", len(raw))
    text = await serving.tokenized(
        request, call, lambda tokenizer: tokenizer.detokenize(wire.ids, special=wire.special)
    )
    return json_response(encode.detokenized(text), call.ticket.headers)


_LATEST = (
    ("model", model, "GET"),
    ("info/version", api_version, "GET"),
    ("config/max_context_length", max_context_length, "GET"),
    ("config/max_length", max_length, "GET"),
    ("config/soft_prompt", soft_prompt, "GET"),
    ("config/soft_prompts_list", soft_prompts_list, "GET"),
    ("generate", generate, "POST"),
)
"""The KoboldAI routes KoboldCpp serves under both `/api/v1/` and `/api/latest/` (no other path has an alias)."""


def routes() -> list[BaseRoute]:
    return [
        *(
            Route(f"{prefix}/{path}", endpoint, methods=[method])
            for path, endpoint, method in _LATEST
            for prefix in ("/api/v1", "/api/latest")
        ),
        Route("/api/extra/version", extra_version, methods=["GET"]),
        Route("/api/extra/true_max_context_length", max_context_length, methods=["GET"]),
        Route("/api/extra/perf", server_perf, methods=["GET"]),
        Route("/api/extra/generate/stream", generate_stream, methods=["POST"]),
        Route("/api/extra/generate/check", check, methods=["GET", "POST"]),
        Route("/api/extra/abort", abort, methods=["POST"]),
        Route("/api/extra/tokencount", token_count, methods=["POST"]),
        Route("/api/extra/tokenize", token_count, methods=["POST"]),
        Route("/api/extra/detokenize", detokenize, methods=["POST"]),
    ]
