"""The backend interface: the one seam where engines differ."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from somner.core import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResult,
    RerankRequest,
    RerankResult,
)

if TYPE_CHECKING:
    from somner.models.backends.passthrough import PassThrough, Reply

ChunkStream = AsyncIterator[Chunk]


class Backend(Protocol):
    """Something that serves one model.

    `chat` and `complete` return once the engine has accepted the request (errors before that are raised,
    so they become a proper error response); the stream then yields chunks, the last one carrying
    `finish_reason` and `usage`, and raises `SomnerError` if the engine fails midway.
    """

    @property
    def alive(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait_exit(self) -> int | None:
        """Return when the backend's process ends on its own (its exit status), or never for remote ones."""
        ...

    async def chat(self, request: ChatRequest) -> ChunkStream: ...

    async def complete(self, request: CompletionRequest) -> ChunkStream: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult: ...


@runtime_checkable
class Supervised(Protocol):
    """A backend that runs an engine process of its own (our worker, a process backend): the manager can ask
    whether the engine still answers (its heartbeat) and kill it outright when it does not."""

    async def responsive(self, within: float) -> bool:
        """Whether the engine answers its health check within `within` seconds (busy engines still answer)."""
        ...

    async def kill(self) -> None:
        """Stop the engine at once (SIGKILL: a hung engine would not act on SIGTERM) and reap it."""
        ...


@runtime_checkable
class SpeaksOpenAI(Protocol):
    """A backend whose engine speaks the OpenAI dialect: its streamed events can reach an OpenAI client as they
    are (see `PassThrough`), without being decoded and encoded again."""

    async def chat_events(self, request: ChatRequest) -> PassThrough: ...

    async def complete_events(self, request: CompletionRequest) -> PassThrough: ...


@runtime_checkable
class RelaysReplies(Protocol):
    """A remote OpenAI engine whose whole (non-streamed) answers reach an OpenAI client as they are. (Local engines
    are always streamed to: that is how the gateway sees progress and cancels a generation whose client left.)"""

    async def chat_reply(self, request: ChatRequest) -> Reply: ...

    async def complete_reply(self, request: CompletionRequest) -> Reply: ...


@runtime_checkable
class Tokenizes(Protocol):
    """A backend whose engine exposes its tokenizer and chat template (llama-server's `/tokenize`,
    `/detokenize`, `/apply-template`). Engines that lack them answer with a clear 400."""

    async def tokenize(
        self, text: str, *, add_special: bool = False, with_pieces: bool = False, parse_special: bool = True
    ) -> list[Any]: ...

    async def detokenize(self, tokens: list[int], *, special: bool = True) -> str: ...

    async def apply_template(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str: ...


@runtime_checkable
class Reranks(Protocol):
    """A backend whose engine may serve rerankers (llama-server's `/v1/rerank`): every document's score, in the
    documents' order. Whether the model has a ranking head is the engine's to say (a 400 when it has none)."""

    async def rerank(self, request: RerankRequest) -> RerankResult: ...


@runtime_checkable
class HasProps(Protocol):
    """A backend whose engine describes itself as llama-server's `/props` does (chat template, slots, context)."""

    async def props(self) -> dict[str, Any]: ...
