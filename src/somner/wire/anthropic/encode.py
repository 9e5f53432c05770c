"""Core → Anthropic wire: whole messages, streamed events, errors.

Token counts follow Anthropic's split: `input_tokens` are the prompt tokens the engine had to read, and
`cache_read_input_tokens` those it reused from its prompt cache; their sum is the whole prompt (what
`/v1/messages/count_tokens` reports). Streamed events are small dicts serialised with orjson, nothing per token
goes through pydantic.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
from typing import Any

import orjson

from somner.core import Chunk, FinishReason, ToolCall, ToolCallDelta, Usage
from somner.errors import EngineFailed, SomnerError

_ID_ALPHABET = string.ascii_letters + string.digits


def _suffix() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def message_id() -> str:
    return "msg_" + _suffix()


def tool_use_id(call_id: str | None) -> str:
    """Anthropic's `toolu_` id for an engine's call id (kept recognisable in logs), or a new one."""
    if call_id and call_id.startswith("toolu_"):
        return call_id
    rest = (call_id or "").removeprefix("call_")
    return "toolu_" + (rest or _suffix())


def stop_reason(finish: FinishReason | None, stop_sequence: str | None, called: bool) -> str:
    if called or finish is FinishReason.TOOL_CALLS:
        return "tool_use"
    if finish is FinishReason.LENGTH:
        return "max_tokens"
    if stop_sequence is not None:
        return "stop_sequence"
    return "end_turn"


def usage(u: Usage) -> dict[str, int]:
    cached = min(u.cached_tokens, u.prompt_tokens)
    return {
        "input_tokens": u.prompt_tokens - cached,
        "cache_read_input_tokens": cached,
        "output_tokens": u.completion_tokens,
    }


def tool_input(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the JSON object Anthropic's `input` is (engines send them as JSON text)."""
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise EngineFailed(f"The engine produced a call of '{call.name}' whose arguments are not a JSON object.")
    return value


def tool_use_block(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_use_id(call.id), "name": call.name, "input": tool_input(call)}


def signature(thinking: str) -> str:
    """The `signature` of a thinking block. Anthropic's lets its API check that thinking passed back is its own;
    this server never reads thinking back (it drops it from prompts), so this only fills the field clients expect."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode("ascii")


def thinking_block(thinking: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature(thinking)}


def message(model: str, text: str, calls: list[ToolCall], last: Chunk, reasoning: str = "") -> dict[str, Any]:
    """A whole `message` from the collected text, tool calls and the final chunk; a reasoning model's thinking
    comes first, as a `thinking` block."""
    content: list[dict[str, Any]] = [thinking_block(reasoning)] if reasoning else []
    if text or not calls:
        content.append({"type": "text", "text": text})
    content.extend(tool_use_block(call) for call in calls)
    reason = stop_reason(last.finish_reason, last.stop_sequence, bool(calls))
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": last.stop_sequence if reason == "stop_sequence" else None,
        "usage": usage(last.usage or Usage()),
    }


def sse(name: str, body: dict[str, Any]) -> bytes:
    """One named server-sent event, as Anthropic frames them."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


# Anthropic's error types by HTTP status (529 is Anthropic's own "overloaded"; our 503 means the same).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(error: SomnerError) -> dict[str, Any]:
    """Anthropic's error envelope: `{"type": "error", "error": {"type": ..., "message": ...}}`."""
    return {"type": "error", "error": {"type": error_type(error.status), "message": error.message}}


def error_event(error: SomnerError) -> bytes:
    return sse("error", error_body(error))


MESSAGE_STOP = sse("message_stop", {"type": "message_stop"})
PING = sse("ping", {"type": "ping"})


class MessageStream:
    """The events of one streamed message. Text and tool calls become content blocks in the order they come; a
    block is stopped when the next one starts, and the last one when the generation ends (`finish`)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = message_id()
        self._blocks = 0  # content blocks started so far
        self._text_block: int | None = None  # the open text block's index
        self._thinking_block: int | None = None  # the open thinking block's index
        self._thinking: list[str] = []  # its text so far (for its signature)
        self._open: int | None = None  # the open block's index
        self._tool_blocks: dict[int, int] = {}  # core call index → block index
        self._called = False
        self._finish: FinishReason | None = None
        self._stop_sequence: str | None = None
        self._usage: Usage | None = None
        self._output_tokens = 0

    def start(self, input_tokens: int) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": body}) + PING

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._thinking_block is not None:  # (a thinking block ends with its signature)
            delta = {"type": "signature_delta", "signature": signature("".join(self._thinking))}
            body = {"type": "content_block_delta", "index": self._thinking_block, "delta": delta}
            out = sse("content_block_delta", body)
            self._thinking_block, self._thinking = None, []
        index, self._open, self._text_block = self._open, None, None
        return out + sse("content_block_stop", {"type": "content_block_stop", "index": index})

    def _think(self, thinking: str) -> bytes:
        out = b""
        if self._thinking_block is None:
            self._thinking_block, out = self._begin({"type": "thinking", "thinking": "", "signature": ""})
        self._thinking.append(thinking)
        delta = {"type": "thinking_delta", "thinking": thinking}
        return out + sse(
            "content_block_delta", {"type": "content_block_delta", "index": self._thinking_block, "delta": delta}
        )

    def _begin(self, block: dict[str, Any]) -> tuple[int, bytes]:
        out = self._close()
        index = self._blocks
        self._blocks += 1
        self._open = index
        out += sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        return index, out

    def _text(self, text: str) -> bytes:
        out = b""
        if self._text_block is None:
            self._text_block, out = self._begin({"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        return out + sse(
            "content_block_delta", {"type": "content_block_delta", "index": self._text_block, "delta": delta}
        )

    def _tool(self, piece: ToolCallDelta) -> bytes:
        out = b""
        index = self._tool_blocks.get(piece.index)
        if index is None:
            self._called = True
            block = {"type": "tool_use", "id": tool_use_id(piece.id), "name": piece.name or "", "input": {}}
            index, out = self._begin(block)
            self._tool_blocks[piece.index] = index
        if piece.arguments:
            delta = {"type": "input_json_delta", "partial_json": piece.arguments}
            out += sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        return out

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.reasoning:
            self._output_tokens += 1
            out += self._think(chunk.reasoning)
        if chunk.text:
            self._output_tokens += 0 if chunk.reasoning else 1
            out += self._text(chunk.text)
        for piece in chunk.tool_calls or []:
            out += self._tool(piece)
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
            self._stop_sequence = chunk.stop_sequence
        if chunk.usage is not None:
            self._usage = chunk.usage
        return out

    def finish(self) -> bytes:
        """The last block's stop (an empty text block if there was none) and the `message_delta`; the stream then
        ends with `MESSAGE_STOP`."""
        out = b""
        if self._blocks == 0:
            _, out = self._begin({"type": "text", "text": ""})
        out += self._close()
        reason = stop_reason(self._finish, self._stop_sequence, self._called)
        counts = usage(self._usage) if self._usage is not None else {"output_tokens": self._output_tokens}
        delta = {"stop_reason": reason, "stop_sequence": self._stop_sequence if reason == "stop_sequence" else None}
        return out + sse("message_delta", {"type": "message_delta", "delta": delta, "usage": counts})
