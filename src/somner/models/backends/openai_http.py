"""A client for engines that speak the OpenAI dialect over HTTP (our worker on a unix socket, later others).

httpx errors are translated here, where they enter: before the engine accepted a request they are a 502/503
error response; after, the stream raises `EngineFailed`, which the API turns into a final error event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import orjson

from somner.core import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
)
from somner.errors import BadRequest, EngineFailed, NotFound, SomnerError, error_from_status
from somner.wire import sse
from somner.wire.openai import decode, encode

log = logging.getLogger(__name__)

ChunkDecoder = Callable[[dict[str, Any]], Chunk]


def error_from_body(status: int, body: bytes) -> SomnerError:
    """Rebuild the engine's error from its OpenAI-shaped body (or say that it had none)."""
    message, code, param = f"the engine answered with status {status}", None, None
    try:
        data = orjson.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code") if isinstance(error.get("code"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
        elif isinstance(error, str):
            message = error
    except orjson.JSONDecodeError:
        pass
    return error_from_status(status, message, code=code, param=param)


class OpenAIHTTPClient:
    def __init__(self, client: httpx.AsyncClient, *, label: str, model_name: str | None = None) -> None:
        self._client = client
        self._label = label
        self._model_name = model_name  # the name the engine knows the model by, when not the client's

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _open(self, path: str, body: dict[str, Any], *, rename_model: bool = True) -> httpx.Response:
        if self._model_name is not None and rename_model:
            body["model"] = self._model_name
        request = self._client.build_request(
            "POST", path, content=orjson.dumps(body), headers={"content-type": "application/json"}
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise EngineFailed(f"{self._label} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise EngineFailed(f"{self._label} is not reachable", code="engine_unreachable") from exc
        if response.status_code != 200:
            try:
                payload = await response.aread()
            except httpx.HTTPError:
                payload = b""
            finally:
                await response.aclose()
            raise error_from_body(response.status_code, payload)
        return response

    async def _events(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The `data:` payloads of an SSE response, until `[DONE]`; transport errors become EngineFailed."""
        try:
            async for data in sse.data_events(response.aiter_raw()):
                if data == sse.DONE:
                    return
                yield data
        except httpx.HTTPError as exc:
            raise EngineFailed(f"{self._label} stopped while generating") from exc
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _chunks(self, events: AsyncIterator[bytes], decode_chunk: ChunkDecoder) -> AsyncIterator[Chunk]:
        """Events decoded into core chunks. The finish chunk is held until the usage event after it arrives, so
        the consumer sees one final chunk carrying both."""
        held: Chunk | None = None
        async for data in events:
            obj = self._parse(data)
            chunk = decode_chunk(obj)
            if held is not None:
                if chunk.usage is not None:
                    held.usage = chunk.usage
                continue
            if chunk.finish_reason is not None:
                held = chunk
                continue
            yield chunk
        if held is None:
            raise EngineFailed(f"{self._label} ended the stream before finishing")
        yield held

    def _parse(self, data: bytes) -> dict[str, Any]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise EngineFailed(f"{self._label} sent a malformed event") from exc
        if not isinstance(obj, dict):
            raise EngineFailed(f"{self._label} sent a malformed event")
        if obj.get("error") is not None:
            raise error_from_body(500, data)
        return obj

    async def chat(self, request: ChatRequest) -> EngineChunks:
        response = await self._open("/v1/chat/completions", encode.chat_request(request))
        return EngineChunks(self._chunks(self._events(response), decode.chat_chunk), _prompt_tokens(response))

    async def complete(self, request: CompletionRequest) -> EngineChunks:
        response = await self._open("/v1/completions", encode.completion_request(request))
        return EngineChunks(self._chunks(self._events(response), decode.completion_chunk), _prompt_tokens(response))

    async def chat_events(self, request: ChatRequest) -> PassThrough:
        response = await self._open("/v1/chat/completions", encode.chat_request(request))
        return PassThrough(self._events(response), self._parse, self._label, _prompt_tokens(response))

    async def complete_events(self, request: CompletionRequest) -> PassThrough:
        response = await self._open("/v1/completions", encode.completion_request(request))
        return PassThrough(self._events(response), self._parse, self._label, _prompt_tokens(response))

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        response = await self._open("/v1/embeddings", encode.embedding_request(request.model, request.inputs))
        try:
            payload = await response.aread()
        except httpx.HTTPError as exc:
            raise EngineFailed(f"{self._label} stopped while embedding") from exc
        finally:
            await response.aclose()
        try:
            data = orjson.loads(payload)
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [list(map(float, item["embedding"])) for item in items]
            prompt_tokens = int(data.get("usage", {}).get("prompt_tokens", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EngineFailed(f"{self._label} sent a malformed embedding response") from exc
        return EmbeddingResult(embeddings=vectors, prompt_tokens=prompt_tokens)

    async def _post_json(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """A small JSON call (tokenizer endpoints). An engine without the endpoint says so clearly."""
        try:
            response = await self._open(path, body, rename_model=False)
        except NotFound:
            raise BadRequest(f"The engine serving this model does not offer {what}.", code="unsupported") from None
        try:
            payload = await response.aread()
        except httpx.HTTPError as exc:
            raise EngineFailed(f"{self._label} stopped while answering") from exc
        finally:
            await response.aclose()
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise EngineFailed(f"{self._label} sent a malformed {what} response") from exc
        if not isinstance(data, dict):
            raise EngineFailed(f"{self._label} sent a malformed {what} response")
        return data

    async def tokenize(self, text: str, *, add_special: bool = False, with_pieces: bool = False) -> list[Any]:
        """Token ids of `text` (or {"id", "piece"} objects `with_pieces`), llama-server's `/tokenize`."""
        body = {"content": text, "add_special": add_special, "with_pieces": with_pieces}
        data = await self._post_json("/tokenize", body, "tokenization")
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise EngineFailed(f"{self._label} sent a malformed tokenization response")
        return tokens

    async def detokenize(self, tokens: list[int]) -> str:
        data = await self._post_json("/detokenize", {"tokens": tokens}, "detokenization")
        return str(data.get("content", ""))

    async def apply_template(self, request: ChatRequest) -> str:
        """The prompt the engine's chat template makes of a chat request (llama-server's `/apply-template`)."""
        body = encode.chat_request(request)
        data = await self._post_json("/apply-template", body, "chat templates")
        return str(data.get("prompt", ""))

    async def get_json(self, path: str, *, deadline: float) -> Any:
        response = await self._client.get(path, timeout=deadline)
        response.raise_for_status()
        return orjson.loads(response.content)


def _prompt_tokens(response: httpx.Response) -> int | None:
    value = response.headers.get("x-somner-prompt-tokens", "")
    return int(value) if value.isdigit() else None


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


class PassThrough:
    """An engine's OpenAI events, passed on unparsed when the client speaks the same dialect.

    Only the few events that matter to the gateway are parsed: errors (raised as `SomnerError`), the finish
    event, and the usage event, whose counts are kept in `usage`. Every other event stays the engine's bytes.
    """

    _FINISH = b'"finish_reason":"'
    _USAGE = b'"usage":{'

    def __init__(
        self,
        events: AsyncIterator[bytes],
        parse: Callable[[bytes], dict[str, Any]],
        label: str,
        prompt_tokens: int | None = None,
    ) -> None:
        self._events = events
        self._parse = parse
        self._label = label
        self.prompt_tokens = prompt_tokens
        self.finished = False
        self.usage: Usage | None = None
        self.content_events = 0  # events carrying generated text (one token each, for Somner's engine)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in self._events:
            if data.startswith(b'{"error"'):
                self._parse(data)  # raises the engine's error
            if self.has_content(data):
                self.content_events += 1
            if self._FINISH in data:
                self.finished = True
            if self._USAGE in data:
                self.usage = decode.usage_of(self._parse(data))
            yield data
        if not self.finished:
            raise EngineFailed(f"{self._label} ended the stream before finishing")

    async def aclose(self) -> None:
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    @staticmethod
    def has_content(data: bytes) -> bool:
        """Whether a chat or completion event carries generated text or a tool call (a byte test, not a parse)."""
        if b'"tool_calls":[{' in data:
            return True
        for marker in (b'"content":"', b'"text":"'):
            at = data.find(marker)
            if at != -1 and data[at + len(marker) : at + len(marker) + 1] != b'"':
                return True
        return False

    @staticmethod
    def is_usage_only(data: bytes) -> bool:
        """The trailing usage event (no choices), which a client that did not ask for usage must not get."""
        return b'"choices":[]' in data and PassThrough._USAGE in data


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

    async def chat_events(self, request: ChatRequest) -> PassThrough:
        return await self._http().chat_events(request)

    async def complete_events(self, request: CompletionRequest) -> PassThrough:
        return await self._http().complete_events(request)

    async def tokenize(self, text: str, *, add_special: bool = False, with_pieces: bool = False) -> list[Any]:
        return await self._http().tokenize(text, add_special=add_special, with_pieces=with_pieces)

    async def detokenize(self, tokens: list[int]) -> str:
        return await self._http().detokenize(tokens)

    async def apply_template(self, request: ChatRequest) -> str:
        return await self._http().apply_template(request)
