"""An OpenAI engine's answers relayed to an OpenAI client as the engine's own bytes.

When the client speaks the engine's dialect there is nothing to convert: a stream is relayed as blobs of whole
SSE events, as many as arrived together (one read from the engine, one write to the client), and a whole answer as
its JSON body. The gateway looks into the bytes only for what it must know: errors, the end of the generation, the
token counts, and (rarely) a model name to rewrite. Parsing happens only for the one usage event of a stream.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from somner.core import Usage
from somner.errors import EngineFailed, EngineGone, SomnerError, error_from_status
from somner.wire.openai import decode

_DONE = b"data: [DONE]"
_FINISH = b'"finish_reason":"'
_USAGE = b'"usage":{'
_ERROR = b'data: {"error"'
_MODEL_FIELD = re.compile(rb'"model":"(?:[^"\\]|\\.)*"')


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


def json_object(data: bytes, complaint: str) -> dict[str, Any]:
    """An engine's JSON object, or `EngineFailed(complaint)` when it sent something else."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EngineFailed(complaint) from exc
    if not isinstance(obj, dict):
        raise EngineFailed(complaint)
    return obj


def parse_event(data: bytes, label: str) -> dict[str, Any]:
    """One event's JSON as a dict; an error event raises the engine's error."""
    obj = json_object(data, f"{label} sent a malformed event")
    if obj.get("error") is not None:
        raise error_from_body(500, data)
    return obj


async def event_blobs(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Blobs of whole `data: ...\\n\\n` events from an SSE body, as they arrive, ending before `data: [DONE]`.

    Events split across reads are held until whole; CRLF framing is made LF (JSON data holds no raw line
    breaks, so this changes no payload)."""
    held = b""
    async for read in body:
        part = read.replace(b"\r\n", b"\n") if b"\r" in read else read
        if held:
            part, held = held + part, b""
        end = part.rfind(b"\n\n")
        if end == -1:
            held = part
            continue
        if end + 2 != len(part):
            part, held = part[: end + 2], part[end + 2 :]
        done = part.find(_DONE)
        if done != -1:
            if done:
                yield part[:done]
            return
        yield part
    if held.strip():
        done = held.find(_DONE)
        tail = held if done == -1 else held[:done]
        if tail.strip():
            yield tail + b"\n\n"


def events_of(blob: bytes) -> list[bytes]:
    """The `data:` payloads in a blob (for the rare event that must be parsed)."""
    out = []
    for block in blob.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                out.append(line[6:] if line.startswith(b"data: ") else line[5:])
    return out


def content_events(blob: bytes) -> int:
    """How many events of a chat or completion stream carry generated text or a tool call (a byte count, not a
    parse: an estimate of the tokens so far, replaced by the engine's own usage when it arrives)."""
    count = blob.count(b'"content":"') - blob.count(b'"content":""') + blob.count(b'"reasoning_content":"')
    count += blob.count(b'"text":"') - blob.count(b'"text":""')
    return count + blob.count(b'"tool_calls":[{')


def without_usage_event(blob: bytes) -> bytes:
    """The blob without the trailing usage event (no choices), for a client that did not ask for usage."""
    kept = [block for block in blob.split(b"\n\n") if block and not (b'"choices":[]' in block and _USAGE in block)]
    return b"".join(block + b"\n\n" for block in kept)


def rename_model(data: bytes, name_field: bytes) -> bytes:
    """Every `"model":"..."` in `data` made `name_field` (an engine calls the model otherwise than the client)."""
    return _MODEL_FIELD.sub(name_field, data)


Resume = Callable[[EngineGone], Awaitable["PassThrough"]]


class PassThrough:
    """An engine's OpenAI event stream: iterating yields blobs of whole SSE events (the engine's bytes, `[DONE]`
    left out), while `finished`, `usage` and `content_events` follow what went by. An error event raises the
    engine's error; a stream that ends without a finish reason raises `EngineFailed`.

    With `resume` set, an engine that goes away before the stream carried any generated text is replaced once: the
    stream goes on with the events of the fresh engine's stream that `resume` opens."""

    def __init__(self, blobs: AsyncIterator[bytes], label: str, prompt_tokens: int | None = None) -> None:
        self._blobs = blobs
        self._label = label
        self.prompt_tokens = prompt_tokens
        self.finished = False
        self.usage: Usage | None = None
        self.content_events = 0
        self.resume: Resume | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async for blob in self._blobs:
                    if _ERROR in blob:
                        for data in events_of(blob):
                            parse_event(data, self._label)  # raises at the error event
                    self.content_events += content_events(blob)
                    if not self.finished and _FINISH in blob:
                        self.finished = True
                    if _USAGE in blob:
                        for data in events_of(blob):
                            if _USAGE in data:
                                self.usage = decode.usage_of(parse_event(data, self._label)) or self.usage
                    yield blob
                break
            except EngineGone as exc:
                if self.resume is None or self.content_events or self.finished:
                    raise
                resume, self.resume = self.resume, None
                await self.aclose()
                fresh = await resume(exc)
                self._blobs, self.prompt_tokens = fresh._blobs, fresh.prompt_tokens
        if not self.finished:
            raise EngineFailed(f"{self._label} ended the stream before finishing")

    async def aclose(self) -> None:
        aclose = getattr(self._blobs, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True)
class Reply:
    """An engine's whole (non-streamed) OpenAI answer: its JSON body as sent, and the token counts in it."""

    body: bytes
    usage: Usage

    @classmethod
    def of(cls, body: bytes, label: str) -> Reply:
        complaint = f"{label} sent a malformed answer"
        data = json_object(body, complaint)
        if not isinstance(data.get("choices"), list):
            raise EngineFailed(complaint)
        return cls(body=body, usage=decode.usage_of(data) or Usage())
