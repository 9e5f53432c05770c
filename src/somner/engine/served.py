"""What the worker's HTTP surface (`server.py`) needs from an engine.

Two engines serve it: llama.cpp's (`runtime.Engine`) and ExLlamaV3's (`somner.exl3`). Both answer the same
routes with the same bytes because `server.py` only uses what these protocols name; each engine keeps its own
job type, which only it makes (`chat_jobs`, `completion_jobs`) and consumes (`scheduler.submit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from somner.core import ChatRequest, CompletionRequest, EmbeddingResult, RerankResult
from somner.core.reasoning import Thought
from somner.engine.jobs import EngineStats
from somner.engine.templates import ChatTemplate


class QueuedJob(Protocol):
    """One sequence to generate, as the server handles it before and after submitting it."""

    @property
    def id(self) -> int: ...

    @property
    def prompt(self) -> list[int]: ...

    @property
    def thought(self) -> Thought | None:
        """How the output is split into reasoning and content (None: it is not)."""

    def discard(self) -> None:
        """Free what the job holds when it will never be submitted."""


class SlotView(Protocol):
    """One of the engine's concurrent sequences (`/stats`)."""

    @property
    def seq(self) -> int: ...

    @property
    def job(self) -> object | None: ...

    @property
    def tokens(self) -> Sequence[int]: ...


class JobQueue(Protocol):
    """The engine's scheduler: the thread that runs submitted jobs and reports their outputs to the sink."""

    @property
    def slots(self) -> Sequence[SlotView]: ...

    @property
    def stats(self) -> EngineStats: ...

    # (Any: each engine takes the job type it made itself; the server only passes them through.)
    def submit(self, job: Any) -> None: ...

    def cancel(self, job_id: int) -> None: ...

    def arriving(self) -> AbstractContextManager[None]: ...

    def stop(self, timeout: float = ...) -> None: ...


class Vocabulary(Protocol):
    """The model's tokenizer, as `/tokenize` and `/detokenize` use it."""

    @property
    def n_embd(self) -> int: ...

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...

    def piece(self, token: int, *, special: bool = False) -> bytes: ...

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str: ...

    def valid_token(self, token: int) -> bool: ...


class ModelLocation(Protocol):
    @property
    def model_path(self) -> Path: ...


class ServedEngine(Protocol):
    """An engine the worker serves: it prepares requests into jobs (caller's thread), runs them on its scheduler
    and knows its vocabulary and chat template."""

    @property
    def config(self) -> ModelLocation: ...

    @property
    def scheduler(self) -> JobQueue: ...

    @property
    def model(self) -> Vocabulary: ...

    @property
    def template(self) -> ChatTemplate | None: ...

    @property
    def n_ctx(self) -> int: ...

    def info(self) -> dict[str, Any]: ...

    def start(self) -> None: ...

    def close(self) -> None:
        """Stop the scheduler (if it still runs) and free the model."""

    def chat_jobs(self, request: ChatRequest) -> Sequence[QueuedJob]: ...

    def completion_jobs(self, request: CompletionRequest) -> Sequence[QueuedJob]: ...

    def render_chat(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str: ...

    def tokenize_prompt(self, text: str) -> list[int]: ...

    async def embed(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult: ...

    async def rerank(self, query: str, documents: list[str]) -> RerankResult:
        """Each document's relevance to the query (a reranker model; BadRequest for any other)."""
