"""Relaying an OpenAI engine's bytes: event framing, what the gateway reads out of them, what it rewrites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from somner.core import Usage
from somner.errors import EngineFailed
from somner.models.backends.passthrough import (
    PassThrough,
    Reply,
    content_events,
    event_blobs,
    rename_model,
    without_usage_event,
)

pytestmark = pytest.mark.anyio


def event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def token(text: str, model: str = "up") -> bytes:
    return event({"model": model, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


FINISH = event({"model": "up", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
USAGE = event({"model": "up", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
DONE = b"data: [DONE]\n\n"


async def reads(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def blobs_of(*parts: bytes) -> list[bytes]:
    return [blob async for blob in event_blobs(reads(*parts))]


async def test_blobs_are_whole_events_as_they_arrived_and_end_before_done() -> None:
    stream = token("a") + token("b") + FINISH + USAGE + DONE
    assert await blobs_of(stream) == [stream.removesuffix(DONE)]
    # Split anywhere, the bytes come out the same, in whole events only.
    for cut in range(1, len(stream) - 1, 7):
        blobs = await blobs_of(stream[:cut], stream[cut:])
        assert b"".join(blobs) == stream.removesuffix(DONE)
        assert all(blob.endswith(b"\n\n") and blob.startswith(b"data: ") for blob in blobs)
    assert await blobs_of(token("a") + DONE + token("after")) == [token("a")]
    # CRLF framing becomes LF; a last event without its blank line still arrives.
    assert await blobs_of(token("a").replace(b"\n", b"\r\n")) == [token("a")]
    assert await blobs_of(token("a").rstrip(b"\n")) == [token("a")]


async def test_the_pass_through_counts_finds_the_usage_and_the_end() -> None:
    relay = PassThrough(event_blobs(reads(token("a") + token(""), token("b") + FINISH, USAGE + DONE)), "engine", 3)
    blobs = [blob async for blob in relay]
    assert len(blobs) == 3
    assert relay.content_events == 2  # the empty delta is not a token
    assert relay.finished
    assert relay.usage == Usage(prompt_tokens=3, completion_tokens=2)


async def test_errors_in_the_stream_and_streams_that_stop_short() -> None:
    error = event({"error": {"message": "no such thing", "type": "invalid_request_error", "code": None}})
    relay = PassThrough(event_blobs(reads(token("a") + error)), "engine")
    with pytest.raises(EngineFailed, match="no such thing"):  # (mid-stream: the engine failed)
        [blob async for blob in relay]
    relay = PassThrough(event_blobs(reads(token("a"))), "engine")
    with pytest.raises(EngineFailed, match="before finishing"):
        [blob async for blob in relay]
    relay = PassThrough(event_blobs(reads(b"data: {not json\n\n" + FINISH + b'data: {"usage":{"x"\n\n')), "engine")
    with pytest.raises(EngineFailed, match="malformed"):
        [blob async for blob in relay]


def test_byte_level_helpers() -> None:
    assert content_events(token("a") + token("") + FINISH + USAGE) == 1
    tool = event({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]})
    assert content_events(tool) == 1
    assert without_usage_event(token("a") + FINISH + USAGE) == token("a") + FINISH
    assert without_usage_event(USAGE) == b""
    assert rename_model(token("a", model="up") + FINISH, b'"model":"mine"') == token("a", model="mine") + event(
        {"model": "mine", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    # Text that merely mentions a model field is JSON-escaped and left alone.
    sneaky = token('{"model":"x"}', model="up")
    assert b'\\"model\\":\\"x\\"' in rename_model(sneaky, b'"model":"mine"')


def test_whole_replies() -> None:
    body = orjson.dumps(
        {
            "model": "up",
            "choices": [{"message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1},
        }
    )
    assert Reply.of(body, "engine") == Reply(body=body, usage=Usage(prompt_tokens=4, completion_tokens=1))
    assert Reply.of(orjson.dumps({"choices": []}), "engine").usage == Usage()
    for bad in (b"<html>", b"[]", b'{"no": "choices"}'):
        with pytest.raises(EngineFailed, match="malformed"):
            Reply.of(bad, "engine")
