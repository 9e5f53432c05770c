"""The `upstream` backend: a remote OpenAI-compatible server (another Somner, vLLM, a hosted API).

Nothing to start or stop but connections. With several base URLs, a request goes to the first that accepts the
connection. For balancing, health checks and failover over several engines, a model lists them as a pool
(`backends:`, see pool.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from somner.core import ChatRequest, CompletionRequest, EmbeddingRequest, EmbeddingResult, RerankRequest, RerankResult
from somner.errors import EngineFailed
from somner.models.backends.base import ChunkStream
from somner.models.backends.http1 import ConnectionPool, Endpoint
from somner.models.backends.openai_http import OpenAIHTTPClient
from somner.models.backends.passthrough import PassThrough, Reply
from somner.models.registry import ModelSpec
from somner.settings import EngineSettings

T = TypeVar("T")


class UpstreamBackend:
    def __init__(self, spec: ModelSpec, settings: EngineSettings) -> None:
        self.spec = spec
        self.settings = settings
        self._clients: list[OpenAIHTTPClient] = []
        self._stopped = asyncio.Event()

    @property
    def alive(self) -> bool:
        return bool(self._clients) and not self._stopped.is_set()

    async def start(self) -> None:
        headers = []
        if self.spec.entry.api_key is not None:
            headers.append(("authorization", f"Bearer {self.spec.entry.api_key.get_secret_value()}"))
        model_name = self.spec.entry.upstream_model or self.spec.id
        for url in self.spec.entry.urls:
            pool = ConnectionPool(
                upstream_endpoint(url), connect_timeout=10.0, read_timeout=self.settings.read_timeout, headers=headers
            )
            self._clients.append(
                OpenAIHTTPClient(pool, label=f"the upstream for {self.spec.id}", model_name=model_name)
            )
        self._stopped.clear()

    async def stop(self) -> None:
        self._stopped.set()
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

    async def wait_exit(self) -> int | None:
        await self._stopped.wait()
        return None

    async def _first(self, call: Callable[[OpenAIHTTPClient], Awaitable[T]]) -> T:
        last: EngineFailed | None = None
        for client in self._clients:
            try:
                return await call(client)
            except EngineFailed as exc:
                if exc.code != "engine_unreachable":
                    raise
                last = exc
        raise last or EngineFailed(f"no upstream is configured for {self.spec.id}")

    async def chat(self, request: ChatRequest) -> ChunkStream:
        return await self._first(lambda c: c.chat(request))

    async def complete(self, request: CompletionRequest) -> ChunkStream:
        return await self._first(lambda c: c.complete(request))

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        return await self._first(lambda c: c.embed(request))

    async def rerank(self, request: RerankRequest) -> RerankResult:
        return await self._first(lambda c: c.rerank(request))

    async def chat_events(self, request: ChatRequest) -> PassThrough:
        return await self._first(lambda c: c.chat_events(request))

    async def complete_events(self, request: CompletionRequest) -> PassThrough:
        return await self._first(lambda c: c.complete_events(request))

    async def chat_reply(self, request: ChatRequest) -> Reply:
        return await self._first(lambda c: c.chat_reply(request))

    async def complete_reply(self, request: CompletionRequest) -> Reply:
        return await self._first(lambda c: c.complete_reply(request))

    async def tokenize(
        self, text: str, *, add_special: bool = False, with_pieces: bool = False, parse_special: bool = True
    ) -> list[Any]:
        return await self._first(
            lambda c: c.tokenize(text, add_special=add_special, with_pieces=with_pieces, parse_special=parse_special)
        )

    async def detokenize(self, tokens: list[int], *, special: bool = True) -> str:
        return await self._first(lambda c: c.detokenize(tokens, special=special))

    async def apply_template(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        return await self._first(lambda c: c.apply_template(request, add_generation_prompt=add_generation_prompt))


def upstream_endpoint(url: str) -> Endpoint:
    """Where an upstream's base URL (with or without its `/v1`) points."""
    return Endpoint.from_url(url.removesuffix("/").removesuffix("/v1"))
