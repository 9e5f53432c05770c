"""`somner worker`: one model's engine behind an OpenAI-dialect HTTP server (unix socket or TCP).

The gateway starts one worker per loaded model and talks to it like any OpenAI-compatible engine, with
llama-server's extensions (`top_k`, `min_p`, `grammar`, `timings`, `/tokenize`, `/detokenize`). The worker is
also usable on its own. Outputs of the engine thread reach each request's queue through one
`call_soon_threadsafe` per scheduling step; a request whose client goes away cancels its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from somner.core import Chunk, SamplingParams, Usage
from somner.core.reasoning import with_reasoning
from somner.core.streams import Collected, collect_choices, gather_all, merge, merge_choices, total_usage
from somner.engine import tools
from somner.engine.config import EngineConfig
from somner.engine.preload import LoadProgress, ModelPreload
from somner.engine.runtime import Engine
from somner.engine.served import JobQueue, QueuedJob, ServedEngine
from somner.errors import BadRequest, SomnerError
from somner.http_server import ManagedStream, Server, server_config
from somner.wire import rerank as rerank_wire
from somner.wire.openai import decode, encode, schemas

log = logging.getLogger(__name__)

_JSON = "application/json"
_INLINE_BODY_BYTES = 16 * 1024
R = TypeVar("R")


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=headers)


def error_response(error: SomnerError) -> Response:
    return json_response(encode.error_body(error), error.status, error.headers)


class JobRouter:
    """Delivers engine outputs to the asyncio queue of the request that owns each job."""

    def __init__(self) -> None:
        self._queues: dict[int, asyncio.Queue[Chunk | SomnerError]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def sink(self, outputs: Sequence[tuple[QueuedJob, Chunk | SomnerError]]) -> None:
        """Engine thread: hand one step's outputs to the event loop in a single wake-up."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._dispatch, outputs)

    def _dispatch(self, outputs: Sequence[tuple[QueuedJob, Chunk | SomnerError]]) -> None:
        for job, item in outputs:
            queue = self._queues.get(job.id)
            if queue is not None:
                queue.put_nowait(item)

    def open(self, job_id: int) -> asyncio.Queue[Chunk | SomnerError]:
        queue: asyncio.Queue[Chunk | SomnerError] = asyncio.Queue()
        self._queues[job_id] = queue
        return queue

    def close(self, job_id: int) -> None:
        self._queues.pop(job_id, None)


class JobStream:
    """The chunks of one submitted job, ending with its final chunk. Closing it early cancels the job."""

    def __init__(self, scheduler: JobQueue, router: JobRouter, job: QueuedJob) -> None:
        self._scheduler = scheduler
        self._router = router
        self._job = job
        self._queue = router.open(job.id)
        self._finished = False
        try:
            scheduler.submit(job)
        except BaseException:
            router.close(job.id)
            raise

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, SomnerError):
            self._end()
            raise item
        if item.finish_reason is not None:
            self._end()
        return item

    def _end(self) -> None:
        self._finished = True
        self._router.close(self._job.id)

    async def aclose(self) -> None:
        if not self._finished:
            self._scheduler.cancel(self._job.id)
            self._end()


@dataclass
class Worker:
    engine: ServedEngine
    router: JobRouter
    model_id: str
    started: int

    def run(self, job: QueuedJob) -> JobStream:
        """Submit `job`; its chunks follow. Close the stream to cancel it."""
        return JobStream(self.engine.scheduler, self.router, job)


def _endpoint(
    handler: Callable[[Worker, Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request.app.state.worker, request)
        except SomnerError as exc:
            return error_response(exc)
        except Exception:
            log.exception("internal error in %s", request.url.path)
            return error_response(SomnerError("internal engine error"))

    return endpoint


PROMPT_TOKENS_HEADER = "x-somner-prompt-tokens"


def _prompt_header(prompts: list[list[int]]) -> dict[str, str]:
    """Prompt tokens, known before the first output: the gateway records them even if the stream breaks off. (A
    prompt counts once however many choices it has.)"""
    return {PROMPT_TOKENS_HEADER: str(sum(len(prompt) for prompt in prompts))}


async def _prepare(fn: Callable[[R], Sequence[QueuedJob]], request: R, *, heavy: bool) -> Sequence[QueuedJob]:
    """Render, tokenize and check a request (one job per choice). Small ones inline (a thread hop costs more than
    the work, and under load it delays the request's arrival); large prompts and grammars in a thread, off the
    event loop."""
    return await asyncio.to_thread(fn, request) if heavy else fn(request)


def _is_heavy(body_size: int, sampling: SamplingParams, *, tools: bool = False) -> bool:
    return body_size > _INLINE_BODY_BYTES or tools or sampling.grammar is not None or sampling.json_schema is not None


def _run_all(worker: Worker, jobs: Sequence[QueuedJob], started: list[JobStream]) -> list[JobStream]:
    """Submit the jobs of one prompt's choices together (they join the same steps), appending each stream to
    `started` (which the caller closes if anything fails); jobs left unsubmitted by a failure free what they hold."""
    streams: list[JobStream] = []
    for position, job in enumerate(jobs):
        try:
            stream = worker.run(job)
        except BaseException:
            for unsubmitted in jobs[position + 1 :]:
                unsubmitted.discard()
            raise
        streams.append(stream)
        started.append(stream)
    return streams


async def _close_all(streams: list[JobStream]) -> None:
    for stream in streams:
        await stream.aclose()


async def chat_completions(worker: Worker, request: Request) -> Response:
    started: list[JobStream] = []
    with worker.engine.scheduler.arriving():
        raw = await request.body()
        wire = decode.parse(schemas.ChatCompletionRequest, raw)
        core = decode.chat_request(wire)
        jobs = await _prepare(
            worker.engine.chat_jobs, core, heavy=_is_heavy(len(raw), core.sampling, tools=bool(core.tools))
        )
        try:
            job_streams = _run_all(worker, jobs, started)
        except BaseException:
            await _close_all(started)
            raise
    offered = tools.offered(core.tools, core.tool_choice)
    per_choice: list[AsyncIterator[Chunk]] = []
    for job, job_stream in zip(jobs, job_streams, strict=True):
        chunks: AsyncIterator[Chunk] = job_stream
        if job.thought is not None:  # (a reasoning model: its thinking is split off first)
            chunks = with_reasoning(chunks, job.thought.splitter())
        if offered:
            chunks = tools.with_tool_calls(chunks, tools.ToolCallParser(offered, parallel=core.parallel_tool_calls))
        per_choice.append(chunks)
    merged = merge_choices(per_choice)
    headers = _prompt_header([jobs[0].prompt])
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    if core.stream:
        stream = encode.ChatStream(worker.model_id, include_usage=include_usage, with_timings=True)

        async def body() -> AsyncIterator[bytes]:
            yield stream.start(len(jobs))
            try:
                async for chunk in merged:
                    yield stream.chunk(chunk)
            except SomnerError as exc:
                yield encode.error_event(exc)
                return
            yield encode.DONE_EVENT

        return ManagedStream(body(), on_close=lambda: _close_all(job_streams), headers=headers)
    try:
        results = await collect_choices(merged, len(jobs))
    finally:
        await _close_all(job_streams)  # (also when the chunks come through the tool-call filter)
    if len(results) == 1:
        (only,) = results
        reply = encode.chat_completion(
            worker.model_id,
            only.text,
            only.last,
            only.logprobs,
            calls=only.tool_calls.calls(),
            with_timings=True,
            reasoning=only.reasoning,
        )
    else:
        reply = encode.chat_completion_choices(worker.model_id, results, total_usage(results), with_timings=True)
    return json_response(reply, headers=headers)


async def _collect_choices(streams: list[JobStream]) -> list[Collected]:
    try:
        return await collect_choices(merge_choices(streams), len(streams))
    finally:
        await _close_all(streams)


async def completions(worker: Worker, request: Request) -> Response:
    started: list[JobStream] = []
    by_prompt: list[list[JobStream]] = []
    prompts: list[list[int]] = []
    with worker.engine.scheduler.arriving():
        raw = await request.body()
        wire = decode.parse(schemas.CompletionRequest, raw)
        cores = decode.completion_requests(wire)
        try:
            for core in cores:
                jobs = await _prepare(worker.engine.completion_jobs, core, heavy=_is_heavy(len(raw), core.sampling))
                by_prompt.append(_run_all(worker, jobs, started))
                prompts.append(jobs[0].prompt)
        except BaseException:
            await _close_all(started)
            raise
    choices = cores[0].n
    include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
    if wire.stream:
        stream = encode.CompletionStream(worker.model_id, include_usage=include_usage, with_timings=True)

        async def body() -> AsyncIterator[bytes]:
            total = Usage()
            try:
                async for prompt, chunk in merge([merge_choices(streams) for streams in by_prompt]):
                    total.add(chunk.usage)
                    yield stream.chunk(chunk, prompt * choices + chunk.index)
            except SomnerError as exc:
                yield encode.error_event(exc)
                return
            yield stream.usage_event(total)
            yield encode.DONE_EVENT

        return ManagedStream(body(), on_close=lambda: _close_all(started), headers=_prompt_header(prompts))
    results = await gather_all([_collect_choices(streams) for streams in by_prompt])
    flat = [result for per_prompt in results for result in per_prompt]
    return json_response(encode.completion(worker.model_id, flat, with_timings=True), headers=_prompt_header(prompts))


async def embeddings(worker: Worker, request: Request) -> Response:
    wire = decode.parse(schemas.EmbeddingRequest, await request.body())
    inputs = decode.embedding_inputs(wire)
    result = await worker.engine.embed(inputs)
    if wire.dimensions is not None and wire.dimensions != worker.engine.model.n_embd:
        raise BadRequest(f"This model's embeddings have {worker.engine.model.n_embd} dimensions.", param="dimensions")
    return json_response(
        encode.embeddings(worker.model_id, result.embeddings, result.prompt_tokens, wire.encoding_format)
    )


async def rerank(worker: Worker, request: Request) -> Response:
    """llama-server's `/v1/rerank`: every document's score, in the documents' order (a reranker model)."""
    wire = decode.parse(rerank_wire.RerankRequest, await request.body())
    documents = rerank_wire.documents_of(wire)
    result = await worker.engine.rerank(wire.query, documents)
    body = rerank_wire.results(
        worker.model_id, result, documents, top_n=wire.top_n, return_documents=wire.return_documents
    )
    return json_response(body)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("The body must be valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code="invalid_type")
    return body


async def tokenize(worker: Worker, request: Request) -> Response:
    body = await _json_object(request)
    content = body.get("content")
    if not isinstance(content, str):
        raise BadRequest("'content' must be a string.", param="content")
    parse_special = body.get("parse_special", True) is not False  # (text naming special tokens becomes them)
    if body.get("add_special") and parse_special:
        tokens = worker.engine.tokenize_prompt(content)  # (no second BOS when the text starts with one)
    else:
        add_special = bool(body.get("add_special"))
        tokens = worker.engine.model.tokenize(content, add_special=add_special, parse_special=parse_special)
    if body.get("with_pieces"):
        model = worker.engine.model
        pieces = [{"id": t, "piece": model.piece(t, special=True).decode("utf-8", "replace")} for t in tokens]
        return json_response({"tokens": pieces})
    return json_response({"tokens": tokens})


async def apply_template(worker: Worker, request: Request) -> Response:
    """The prompt a chat request renders to (llama-server's `/apply-template`), tools included; with
    `add_generation_prompt: false` (an extension) without the opening of the assistant's turn."""
    wire = decode.parse(schemas.ChatCompletionRequest, await request.body())
    core = decode.chat_request(wire)
    declared = getattr(wire, "add_generation_prompt", None)
    opening = (declared if declared is not None else (wire.model_extra or {}).get("add_generation_prompt")) is not False
    return json_response({"prompt": worker.engine.render_chat(core, add_generation_prompt=opening)})


async def detokenize(worker: Worker, request: Request) -> Response:
    body = await _json_object(request)
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise BadRequest("'tokens' must be a list of token ids.", param="tokens")
    model = worker.engine.model
    bad = next((t for t in tokens if not model.valid_token(t)), None)
    if bad is not None:
        raise BadRequest(f"token {bad} is outside the vocabulary", param="tokens")
    special = body.get("special", True) is not False
    return json_response({"content": model.detokenize(tokens, special=special)})


async def health(worker: Worker, request: Request) -> Response:
    return json_response({"status": "ok", **worker.engine.info()})


async def props(worker: Worker, request: Request) -> Response:
    """llama-server's `/props`: the chat template's source, the slots and the context per slot."""
    engine = worker.engine
    return json_response(
        {
            "chat_template": engine.template.source if engine.template is not None else "",
            "template": engine.template.label if engine.template is not None else None,
            "total_slots": len(engine.scheduler.slots),
            "default_generation_settings": {"n_ctx": engine.n_ctx},
            "model_path": engine.config.model_path.name,
        }
    )


async def models(worker: Worker, request: Request) -> Response:
    card = encode.model_card(worker.model_id, worker.started, meta=worker.engine.info())
    return json_response({"object": "list", "data": [card]})


async def stats(worker: Worker, request: Request) -> Response:
    slots = [
        {"id": s.seq, "busy": s.job is not None, "cached_tokens": len(s.tokens)} for s in worker.engine.scheduler.slots
    ]
    return json_response({"engine": worker.engine.scheduler.stats.snapshot(), "slots": slots, "pid": os.getpid()})


async def not_found(request: Request, exc: Exception) -> Response:
    return error_response(SomnerError(f"No route {request.url.path}", code="not_found"))


def create_worker_app(engine: ServedEngine, router: JobRouter, model_id: str) -> Starlette:
    routes = [
        Route("/health", _endpoint(health), methods=["GET"]),
        Route("/stats", _endpoint(stats), methods=["GET"]),
        Route("/props", _endpoint(props), methods=["GET"]),
        Route("/v1/models", _endpoint(models), methods=["GET"]),
        Route("/v1/chat/completions", _endpoint(chat_completions), methods=["POST"]),
        Route("/v1/completions", _endpoint(completions), methods=["POST"]),
        Route("/v1/embeddings", _endpoint(embeddings), methods=["POST"]),
        Route("/v1/rerank", _endpoint(rerank), methods=["POST"]),
        Route("/rerank", _endpoint(rerank), methods=["POST"]),
        Route("/tokenize", _endpoint(tokenize), methods=["POST"]),
        Route("/detokenize", _endpoint(detokenize), methods=["POST"]),
        Route("/apply-template", _endpoint(apply_template), methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        router.bind(asyncio.get_running_loop())
        engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(engine.scheduler.stop)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.worker = Worker(engine=engine, router=router, model_id=model_id, started=int(time.time()))
    return app


def _exit_with_parent() -> None:
    """Stop when the parent's end of our stdin closes: a gateway that dies leaves no worker behind.

    The watcher reads the raw file descriptor (`os.read`), never `sys.stdin`: a daemon thread blocked inside the
    buffered reader holds its lock, and the interpreter's shutdown, which flushes stdin, then aborts the process
    (SIGABRT, "could not acquire lock for <stdin>") on every normal exit, hiding the worker's real exit status."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        log.warning("parent process went away; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class WorkerServer(Server):
    """The worker's HTTP server. A stop signal that finds nothing running ends the process at once, instead of
    after uvicorn's shutdown polls (a tenth of a second each) and the interpreter's teardown: a model swap waits for
    this engine to be gone. With requests in flight the graceful shutdown runs as always."""

    def __init__(self, config: Any, *, idle: Callable[[], bool], quit_now: Callable[[], None]) -> None:
        super().__init__(config)
        self._idle = idle
        self._quit_now = quit_now
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and sig == signal.SIGTERM:
            self._loop.call_soon_threadsafe(self._quit_if_idle)

    def _quit_if_idle(self) -> None:
        if self.started and not self.server_state.tasks and self._idle():
            self._quit_now()


def run_worker(
    config: EngineConfig,
    *,
    socket_path: str | None,
    host: str,
    port: int | None,
    exit_with_parent: bool,
    preloaded: ModelPreload | None = None,
) -> int:
    """Load the model (or take it from `preloaded`), then serve until SIGTERM. Returns the process exit status."""
    return serve_engine(
        lambda router, progress: Engine(config, router.sink, on_progress=progress, preloaded=preloaded),
        config.model_id,
        socket_path=socket_path,
        host=host,
        port=port,
        exit_with_parent=exit_with_parent,
    )


EngineLoader = Callable[[JobRouter, LoadProgress], ServedEngine]
"""Loads an engine whose outputs go to the router's sink, reporting the load's progress."""


def serve_engine(
    load: EngineLoader,
    model_id: str,
    *,
    socket_path: str | None,
    host: str,
    port: int | None,
    exit_with_parent: bool,
) -> int:
    """Load an engine (any of Somner's: see served.py), then serve it until SIGTERM. Returns the process exit
    status: 2, with a `somner worker: cannot load model: ...` line for the gateway, when the model cannot load."""
    if exit_with_parent:
        _exit_with_parent()
    router = JobRouter()
    try:
        engine = load(router, LoadProgress())
    except (SomnerError, RuntimeError, ValueError, OSError) as exc:
        message = exc.message if isinstance(exc, SomnerError) else str(exc)
        log.error("cannot load model %s: %s", model_id, message)
        print(f"somner worker: cannot load model: {message}", file=sys.stderr)  # noqa: T201 - for the gateway
        return 2
    app = create_worker_app(engine, router, model_id)

    def remove_socket() -> None:
        if socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path)

    def idle() -> bool:
        stats = engine.scheduler.stats
        with stats.lock:
            return bool(stats.active == 0 and stats.queued == 0)

    def quit_now() -> None:  # (nothing runs: no engine teardown either)
        remove_socket()
        log.info("stopped while idle")
        exit_now(0)

    remove_socket()
    config = server_config(app, uds=socket_path, host=host, port=port or 0, timeout_graceful_shutdown=3)
    try:
        WorkerServer(config, idle=idle, quit_now=quit_now).run()
    finally:
        engine.close()
        remove_socket()
    return 0


def exit_now(status: int) -> NoReturn:
    """End the worker process without the interpreter's teardown of llama.cpp, numpy and the rest (about a fifth
    of a second that a model swap waits for): logs and output are flushed first, and the operating system takes
    back the memory."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
