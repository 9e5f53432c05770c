"""A zero-delay OpenAI-compatible server, for measuring what a gateway in front of it adds.

    python benchmarks/mock_upstream.py --port P [--host 127.0.0.1] [--chunks 64] [--delay-ms 0]

Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (plain JSON, or SSE when the body
says `"stream": true`), and `GET /stats` (how many requests it answered, by path, not counting `/stats` itself, and
how many connections it accepted: tests use it to prove that a gateway refused a request without calling upstream,
and to see whether it reuses its upstream connections).

A streamed answer has N content events of one token each (N: the request's `max_tokens`, else `--chunks`), a
finish event, a usage event when `stream_options.include_usage` is set, and `[DONE]`. Prompt tokens are the
number of whitespace-separated words in the prompt (or the messages' text), so callers can predict them.

It is written at the asyncio protocol level (no framework, uvloop when installed) so that it is never the
bottleneck of a benchmark: one parse of the request body, response bytes built from cached templates, and a
whole zero-delay stream written in one call. Keep-alive, pipelining and `Connection: close` are honoured;
responses carry `Content-Length`, streams use chunked transfer encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

try:
    import orjson

    def _dumps(value: object) -> bytes:
        return orjson.dumps(value)

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - the project's venv has orjson

    def _dumps(value: object) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    _loads = json.loads

TOKEN = " tok"
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Options:
    chunks: int
    delay: float  # seconds between content events


@dataclass(slots=True)
class Request:
    method: str
    path: str
    body: bytes
    close: bool


@dataclass(slots=True)
class Reply:
    """A whole response (`head` + `body`), or a stream head with events to send apart (`events`, with a delay)."""

    head: bytes
    body: bytes = b""
    events: list[bytes] | None = None


def _head(status: str, content_type: str, length: int | None, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-type: {content_type}"]
    lines.append(f"content-length: {length}" if length is not None else "transfer-encoding: chunked")
    lines.append("connection: close" if close else "connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def json_reply(status: str, value: object, close: bool) -> Reply:
    body = _dumps(value)
    return Reply(_head(status, "application/json", len(body), close), body)


def error_reply(status: str, message: str, close: bool) -> Reply:
    return json_reply(status, {"error": {"message": message, "type": "invalid_request_error", "code": None}}, close)


def words(value: object) -> int:
    """Whitespace-separated words in a prompt, a list of prompts, or message contents (text parts)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(item) for item in value)
    if isinstance(value, dict):
        if "content" in value:
            return words(value["content"])
        if value.get("type") == "text":
            return words(value.get("text", ""))
    return 0


class Answers:
    """Response bytes for the inference routes. Event templates are cached per (route, model, count)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._events: dict[tuple[bool, str, int], list[bytes]] = {}

    def stream_events(self, chat: bool, model: str, count: int) -> list[bytes]:
        """The content events and the finish event (already framed as SSE), cached."""
        key = (chat, model, count)
        cached = self._events.get(key)
        if cached is not None:
            return cached
        kind = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": "cmpl-mock", "object": kind, "created": 0, "model": model}
        events: list[bytes] = []
        for i in range(count):
            if chat:
                delta: dict[str, str] = {"role": "assistant", "content": TOKEN} if i == 0 else {"content": TOKEN}
                choice: dict[str, object] = {"index": 0, "delta": delta, "finish_reason": None}
            else:
                choice = {"index": 0, "text": TOKEN, "logprobs": None, "finish_reason": None}
            events.append(b"data: " + _dumps({**base, "choices": [choice]}) + b"\n\n")
        finish: dict[str, object] = {"index": 0, "finish_reason": "length"}
        if chat:
            finish["delta"] = {}
        else:
            finish.update(text="", logprobs=None)
        events.append(b"data: " + _dumps({**base, "choices": [finish]}) + b"\n\n")
        if len(self._events) > 256:
            self._events.clear()
        self._events[key] = events
        return events

    def answer(self, chat: bool, body: dict[str, Any], close: bool) -> Reply:
        model = str(body.get("model") or "mock")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        count = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else self.options.chunks
        prompt = words(body.get("messages") if chat else body.get("prompt"))
        usage = {"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count}
        if not body.get("stream"):
            text = TOKEN * count
            if chat:
                message = {"role": "assistant", "content": text}
                choice: dict[str, object] = {"index": 0, "message": message, "finish_reason": "length"}
                kind = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
                kind = "text_completion"
            value = {"id": "cmpl-mock", "object": kind, "created": 0, "model": model, "choices": [choice]}
            return json_reply("200 OK", {**value, "usage": usage}, close)
        events = list(self.stream_events(chat, model, count))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            kind = "chat.completion.chunk" if chat else "text_completion"
            tail = {"id": "cmpl-mock", "object": kind, "created": 0, "model": model, "choices": [], "usage": usage}
            events.append(b"data: " + _dumps(tail) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        head = _head("200 OK", "text/event-stream", None, close)
        if self.options.delay > 0:
            return Reply(head, events=events)
        return Reply(head, b"".join(_chunked(e) for e in events) + b"0\r\n\r\n")


class MockServer:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.answers = Answers(options)
        self.stats: Counter[str] = Counter()
        self.connections = 0  # accepted so far: a client that reuses connections keeps this low

    def handle(self, request: Request) -> Reply:
        close = request.close
        path = request.path.split("?", 1)[0]
        if path == "/stats":
            counts = dict(self.stats)
            stats = {"requests": sum(counts.values()), "by_path": counts, "connections": self.connections}
            return json_reply("200 OK", stats, close)
        self.stats[path] += 1
        if path == "/v1/models" and request.method == "GET":
            card = {"id": "mock", "object": "model", "created": 0, "owned_by": "mock"}
            return json_reply("200 OK", {"object": "list", "data": [card]}, close)
        if path in ("/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions"):
            if request.method != "POST":
                return error_reply("405 Method Not Allowed", "use POST", close)
            try:
                body = _loads(request.body)
            except ValueError:
                return error_reply("400 Bad Request", "the body is not JSON", close)
            if not isinstance(body, dict):
                return error_reply("400 Bad Request", "the body is not a JSON object", close)
            return self.answers.answer(path.endswith("chat/completions"), body, close)
        return error_reply("404 Not Found", f"no route {path}", close)


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: requests are parsed from the buffer and answered in order."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: deque[Request] = deque()
        self.streaming = False  # a delayed stream is being written; later requests wait for it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.server.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            request = self._parse()
            if request is None:
                break
            self.pending.append(request)
        self._drain()

    def _parse(self) -> Request | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end == -1:
            if len(self.buffer) > MAX_HEADER_BYTES:
                self._fail("431 Request Header Fields Too Large")
            return None
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            self._fail("400 Bad Request")
            return None
        length = 0
        close = version == "HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection":
                token = value.strip().lower()
                close = token == "close" or (close and token != "keep-alive")
            elif name == "transfer-encoding" and "chunked" in value.lower():
                self._fail("411 Length Required")
                return None
        total = end + 4 + length
        if len(self.buffer) < total:
            return None
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        return Request(method, target, body, close)

    def _fail(self, status: str) -> None:
        self.buffer.clear()
        if self.transport is not None:
            reply = error_reply(status, "malformed request", True)
            self.transport.write(reply.head + reply.body)
            self.transport.close()

    def _drain(self) -> None:
        while self.pending and not self.streaming and self.transport is not None:
            request = self.pending.popleft()
            reply = self.server.handle(request)
            if reply.events is not None:
                self.streaming = True
                asyncio.get_running_loop().create_task(self._stream(reply, request.close))
                return
            self.transport.write(reply.head + reply.body)
            if request.close:
                self.transport.close()
                return

    async def _stream(self, reply: Reply, close: bool) -> None:
        assert reply.events is not None
        for data in [reply.head, *(_chunked(e) for e in reply.events), b"0\r\n\r\n"]:
            transport = self.transport  # None once the client has gone (connection_lost)
            if transport is None:
                return
            transport.write(data)
            if data.startswith(b"data: ", data.find(b"\r\n") + 2) and not data.endswith(b"[DONE]\n\n\r\n"):
                await asyncio.sleep(self.server.options.delay)
        if self.transport is None:
            return
        self.streaming = False
        if close:
            self.transport.close()
            return
        self._drain()


async def serve(host: str, port: int, options: Options, ready: Callable[[int], None] | None = None) -> None:
    server = MockServer(options)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Connection(server), host, port, backlog=1024, reuse_address=True)
    bound = int(listener.sockets[0].getsockname()[1])
    if ready is not None:
        ready(bound)
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--chunks", type=int, default=64, help="content events per stream without max_tokens")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="pause between content events")
    args = parser.parse_args()
    options = Options(chunks=args.chunks, delay=args.delay_ms / 1000.0)

    def ready(port: int) -> None:
        print(f"mock upstream listening on http://{args.host}:{port}", flush=True)

    try:
        import uvloop

        run: Callable[..., None] = uvloop.run
    except ImportError:
        run = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port, options, ready))


if __name__ == "__main__":
    main()
