"""A client for engines that speak the OpenAI dialect over HTTP (our worker on a unix socket, llama-server,
vLLM, remote upstreams), on the keep-alive connections of `http1.ConnectionPool`.

Transport errors are translated here, where they enter: before the engine accepted a request they are a 502/503
error response; after, the stream raises `EngineFailed`, which the API turns into a final error event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import orjson

from somner.core import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResult,
    RerankRequest,
    RerankResult,
)
from somner.errors import BadRequest, EngineFailed, EngineGone, NotFound
from somner.models.backends.http1 import ConnectError, ConnectionPool, HTTPError, ReadTimeout, Response
from somner.models.backends.passthrough import (
    PassThrough,
    Reply,
    error_from_body,
    event_blobs,
    json_object,
    parse_event,
)
from somner.wire import rerank as rerank_wire
from somner.wire import sse
from somner.wire.openai import decode, encode

log = logging.getLogger(__name__)

ChunkDecoder = Callable[[dict[str, Any]], Chunk]

PROMPT_TOKENS_HEADER = b"x-somner-prompt-tokens"
_END_GRACE = 1.0  # seconds to read the last bytes of a finished stream, so its connection can be reused


class OpenAIHTTPClient:
    def __init__(self, pool: ConnectionPool, *, label: str, model_name: str | None = None) -> None:
        self.pool = pool
        self._label = label
        self._model_name = model_name  # the name the engine knows the model by, when not the client's

    async def aclose(self) -> None:
        await self.pool.aclose()

    def _failed(self, exc: HTTPError, doing: str) -> EngineFailed:
        """A transport failure: a timeout is the engine's slowness; anything else means it went away (`EngineGone`:
        a request that had no token yet may run again on a fresh engine)."""
        if isinstance(exc, ReadTimeout):
            return EngineFailed(f"{self._label} did not answer in time")
        if isinstance(exc, ConnectError):
            return EngineGone(f"{self._label} is not reachable")
        return EngineGone(f"{self._label} {doing}")

    async def _open(self, path: str, body: dict[str, Any], *, rename_model: bool = True) -> Response:
        if self._model_name is not None and rename_model:
            body["model"] = self._model_name
        try:
            response = await self.pool.request("POST", path, orjson.dumps(body))
        except HTTPError as exc:
            # Nothing came back: the engine never took the request (or broke before answering).
            if isinstance(exc, ReadTimeout):
                raise EngineFailed(f"{self._label} did not answer in time") from exc
            raise EngineGone(f"{self._label} is not reachable") from exc
        if response.status != 200:
            try:
                payload = await response.read()
            except HTTPError:
                payload = b""
            finally:
                await response.aclose()
            raise error_from_body(response.status, payload)
        return response

    async def _read(self, response: Response, doing: str) -> bytes:
        try:
            return await response.read()
        except HTTPError as exc:
            raise self._failed(exc, doing) from exc
        finally:
            await response.aclose()

    async def _body(self, response: Response) -> AsyncIterator[bytes]:
        """The response body as it arrives; transport errors become EngineFailed."""
        try:
            async for part in response.stream():
                yield part
        except HTTPError as exc:
            raise self._failed(exc, "stopped while generating") from exc

    async def _events(self, response: Response) -> AsyncIterator[bytes]:
        """The `data:` payloads of an SSE response, until `[DONE]`."""
        try:
            async for data in sse.data_events(self._body(response)):
                if data == sse.DONE:
                    await response.finish(_END_GRACE)
                    return
                yield data
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _blobs(self, response: Response) -> AsyncIterator[bytes]:
        """Whole SSE events as they arrive, until `[DONE]` (see passthrough.event_blobs)."""
        try:
            async for blob in event_blobs(self._body(response)):
                yield blob
            await response.finish(_END_GRACE)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _chunks(self, events: AsyncIterator[bytes], decode_chunk: ChunkDecoder) -> AsyncIterator[Chunk]:
        """Events decoded into core chunks. The latest finish chunk is held until the next one (several choices,
        `n`) or the end, and the usage event after the last is put on it, so the consumer sees one final chunk
        carrying the usage of them all."""
        held: Chunk | None = None
        async for data in events:
            chunk = decode_chunk(parse_event(data, self._label))
            if chunk.finish_reason is not None:
                if held is not None:
                    yield held
                held = chunk
                continue
            if held is not None:
                if chunk.usage is not None:
                    held.usage = chunk.usage
                if not (chunk.text or chunk.tool_calls or chunk.logprobs):
                    continue  # (after a finish: the usage event, or nothing for any choice)
                chunk.usage = None
            yield chunk
        if held is None:
            raise EngineFailed(f"{self._label} ended the stream before finishing")
        yield held

    async def chat(self, request: ChatRequest) -> EngineChunks:
        response = await self._open("/v1/chat/completions", encode.chat_request(request))
        return EngineChunks(self._chunks(self._events(response), decode.chat_chunk), _prompt_tokens(response))

    async def complete(self, request: CompletionRequest) -> EngineChunks:
        response = await self._open("/v1/completions", encode.completion_request(request))
        return EngineChunks(self._chunks(self._events(response), decode.completion_chunk), _prompt_tokens(response))

    async def chat_events(self, request: ChatRequest) -> PassThrough:
        response = await self._open("/v1/chat/completions", encode.chat_request(request))
        return PassThrough(self._blobs(response), self._label, _prompt_tokens(response))

    async def complete_events(self, request: CompletionRequest) -> PassThrough:
        response = await self._open("/v1/completions", encode.completion_request(request))
        return PassThrough(self._blobs(response), self._label, _prompt_tokens(response))

    async def chat_reply(self, request: ChatRequest) -> Reply:
        response = await self._open("/v1/chat/completions", encode.chat_request(request, stream=False))
        return Reply.of(await self._read(response, "stopped while generating"), self._label)

    async def complete_reply(self, request: CompletionRequest) -> Reply:
        response = await self._open("/v1/completions", encode.completion_request(request, stream=False))
        return Reply.of(await self._read(response, "stopped while generating"), self._label)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        response = await self._open("/v1/embeddings", encode.embedding_request(request.model, request.inputs))
        payload = await self._read(response, "stopped while embedding")
        try:
            data = orjson.loads(payload)
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [list(map(float, item["embedding"])) for item in items]
            prompt_tokens = int(data.get("usage", {}).get("prompt_tokens", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EngineFailed(f"{self._label} sent a malformed embedding response") from exc
        return EmbeddingResult(embeddings=vectors, prompt_tokens=prompt_tokens)

    async def rerank(self, request: RerankRequest) -> RerankResult:
        try:
            response = await self._open("/v1/rerank", rerank_wire.engine_request(request))
        except NotFound:
            raise BadRequest("The engine serving this model does not offer reranking.", code="unsupported") from None
        payload = await self._read(response, "stopped while reranking")
        try:
            data = orjson.loads(payload)
            scores = rerank_wire.scores_of(data, len(request.documents))
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens", usage.get("total_tokens", 0)))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            raise EngineFailed(f"{self._label} sent a malformed rerank response") from exc
        return RerankResult(scores=scores, prompt_tokens=prompt_tokens)

    async def _post_json(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """A small JSON call (tokenizer endpoints). An engine without the endpoint says so clearly."""
        try:
            response = await self._open(path, body, rename_model=False)
        except NotFound:
            raise BadRequest(f"The engine serving this model does not offer {what}.", code="unsupported") from None
        payload = await self._read(response, "stopped while answering")
        return json_object(payload, f"{self._label} sent a malformed {what} response")

    async def tokenize(
        self, text: str, *, add_special: bool = False, with_pieces: bool = False, parse_special: bool = True
    ) -> list[Any]:
        """Token ids of `text` (or {"id", "piece"} objects `with_pieces`), llama-server's `/tokenize`."""
        body = {"content": text, "add_special": add_special, "with_pieces": with_pieces, "parse_special": parse_special}
        data = await self._post_json("/tokenize", body, "tokenization")
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise EngineFailed(f"{self._label} sent a malformed tokenization response")
        return tokens

    async def detokenize(self, tokens: list[int], *, special: bool = True) -> str:
        data = await self._post_json("/detokenize", {"tokens": tokens, "special": special}, "detokenization")
        return str(data.get("content", ""))

    async def apply_template(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        """The prompt the engine's chat template makes of a chat request (llama-server's `/apply-template`)."""
        body = encode.chat_request(request)
        if not add_generation_prompt:
            body["add_generation_prompt"] = False
        data = await self._post_json("/apply-template", body, "chat templates")
        return str(data.get("prompt", ""))

    async def props(self) -> dict[str, Any]:
        """llama-server's `/props` (chat template, slots, context), or {} when the engine has none."""
        try:
            data = await self.get_json("/props", deadline=5.0)
        except (HTTPError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    async def get_json(self, path: str, *, deadline: float) -> Any:
        """A GET that must answer 200 with JSON within `deadline` seconds (raises `HTTPError` or ValueError)."""
        return orjson.loads(await self.pool.get_json_bytes(path, within=deadline))


def _prompt_tokens(response: Response) -> int | None:
    value = response.header(PROMPT_TOKENS_HEADER)
    return int(value) if value is not None and value.isdigit() else None


class EngineChunks:
    """An engine's decoded chunks, with the prompt size it reported up front (when it does: Somner's worker)."""

    def __init__(self, chunks: AsyncIterator[Chunk], prompt_tokens: int | None) -> None:
        self._chunks = chunks
        self.prompt_tokens = prompt_tokens

    def __aiter__(self) -> EngineChunks:
        return self

    async def __anext__(self) -> Chunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class ServedOverHTTP:
    """The request methods of a backend whose engine is reached through one `OpenAIHTTPClient` (`_http()`)."""

    def _http(self) -> OpenAIHTTPClient:
        raise NotImplementedError

    async def chat(self, request: ChatRequest) -> EngineChunks:
        return await self._http().chat(request)

    async def complete(self, request: CompletionRequest) -> EngineChunks:
        return await self._http().complete(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        return await self._http().embed(request)

    async def rerank(self, request: RerankRequest) -> RerankResult:
        return await self._http().rerank(request)

    async def chat_events(self, request: ChatRequest) -> PassThrough:
        return await self._http().chat_events(request)

    async def complete_events(self, request: CompletionRequest) -> PassThrough:
        return await self._http().complete_events(request)

    async def tokenize(
        self, text: str, *, add_special: bool = False, with_pieces: bool = False, parse_special: bool = True
    ) -> list[Any]:
        return await self._http().tokenize(
            text, add_special=add_special, with_pieces=with_pieces, parse_special=parse_special
        )

    async def detokenize(self, tokens: list[int], *, special: bool = True) -> str:
        return await self._http().detokenize(tokens, special=special)

    async def apply_template(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        return await self._http().apply_template(request, add_generation_prompt=add_generation_prompt)

    async def props(self) -> dict[str, Any]:
        return await self._http().props()
