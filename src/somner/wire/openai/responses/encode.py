"""Core → Responses API wire: the response object, whole or as its stream of events.

A response's `output` is a list of items: at most one assistant message (its text as one `output_text` part) and
the function calls the model made. Streamed, each item is added, filled by deltas and marked done, every event
numbered by `sequence_number`; the last event carries the whole response (`response.completed`, or
`response.incomplete` when `max_output_tokens` cut it short, or `response.failed` when the engine failed).
Events are small dicts serialised with orjson; nothing per token goes through pydantic.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from somner.core import Chunk, FinishReason, ToolCall, ToolCallDelta, Usage
from somner.core.streams import Collected
from somner.errors import SomnerError


@dataclass(frozen=True, slots=True)
class Echo:
    """The request's settings as the response object repeats them (already in wire shape)."""

    model: str
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: dict[str, Any] = field(default_factory=lambda: {"format": {"type": "text"}})
    metadata: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    reasoning_effort: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def reasoning_part(text: str) -> dict[str, Any]:
    return {"type": "reasoning_text", "text": text}


def reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    """A reasoning model's thinking, as its text (`content`; no summary is made); `text` None while it has no
    content part yet."""
    content = [] if text is None else [reasoning_part(text)]
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content, "status": status}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    """An assistant message; `text` None while it has no content part yet."""
    content = [] if text is None else [text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "content": content, "role": "assistant"}


def function_call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": call.arguments,
        "call_id": call.id,
        "name": call.name,
    }


def _call_id(engine_id: str | None) -> str:
    return engine_id or new_id("call")


def response_object(
    echo: Echo,
    response_id: str,
    created_at: int,
    *,
    status: str,
    output: list[dict[str, Any]],
    used: Usage | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `response` object. Somner keeps no responses: `store` is always false, `previous_response_id` null."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "max_tool_calls": None,
        "model": echo.model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": None,
        "reasoning": {"effort": echo.reasoning_effort, "summary": None},
        "service_tier": "default",
        "store": False,
        "temperature": echo.temperature,
        "text": echo.text,
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": usage(used) if used is not None else None,
        "user": echo.user,
        "metadata": echo.metadata,
    }


def _final_status(finish: FinishReason | None) -> str:
    return "incomplete" if finish is FinishReason.LENGTH else "completed"


def response(echo: Echo, reply: Collected) -> dict[str, Any]:
    """The whole response of a collected generation: the message (if there is text, or nothing else), then calls."""
    status = _final_status(reply.finish_reason)
    calls = reply.tool_calls.calls()
    output: list[dict[str, Any]] = []
    if reply.reasoning:  # (complete when an answer followed it)
        thought_status = "completed" if reply.text or calls else status
        output.append(reasoning_item(new_id("rs"), reply.reasoning, thought_status))
    if reply.text or not calls:
        output.append(message_item(new_id("msg"), reply.text, status))
    for call in calls:
        call.id = _call_id(call.id)
        output.append(function_call_item(new_id("fc"), call, status))
    return response_object(echo, new_id("resp"), int(time.time()), status=status, output=output, used=reply.usage)


def failure(error: SomnerError) -> dict[str, Any]:
    """A response's `error`: OpenAI's codes are few (a rate limit, a bad prompt, else a server error)."""
    if error.status == 429:
        code = "rate_limit_exceeded"
    elif 400 <= error.status < 500:
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {"code": code, "message": error.message, "param": error.param, "type": error.kind}


# -- streaming ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """An output item being streamed: a message (text parts) or a function call (argument parts)."""

    output_index: int
    id: str
    call: ToolCall | None = None  # None for the message
    parts: list[str] = field(default_factory=list)
    status: str = "in_progress"
    reasoning: bool = False  # a reasoning item (its parts are the thinking)

    def wire(self) -> dict[str, Any]:
        text = "".join(self.parts)
        if self.reasoning:
            return reasoning_item(self.id, text, self.status)
        if self.call is None:
            return message_item(self.id, text, self.status)
        return function_call_item(self.id, ToolCall(id=self.call.id, name=self.call.name, arguments=text), self.status)


class ResponseStream:
    """The events of one streamed response: `start`, then `chunk` for each core chunk, then `end` (or `failed`,
    which is the stream's error event)."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.sequence = 0
        self.items: list[_Item] = []
        self._message: _Item | None = None
        self._thought: _Item | None = None  # the open reasoning item
        self._calls: dict[int, _Item] = {}  # by the engine's call index
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None

    def _event(self, kind: str, body: dict[str, Any]) -> bytes:
        data = orjson.dumps({"type": kind, "sequence_number": self.sequence, **body})
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        output = [item.wire() for item in self.items] if status != "in_progress" else []
        used = self._usage if status != "in_progress" else None
        return response_object(
            self.echo, self.id, self.created_at, status=status, output=output, used=used, error=error
        )

    def start(self) -> bytes:
        body = {"response": self._response("in_progress")}
        return self._event("response.created", body) + self._event("response.in_progress", body)

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.reasoning:
            out += self._think(chunk.reasoning)
        if self._thought is not None and (chunk.text or chunk.tool_calls):  # (the answer follows the thought)
            out += self._close_thought()
        for delta in chunk.tool_calls or []:
            out += self._call_delta(delta)
        if chunk.text:
            out += self._text(chunk.text)
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        return out

    def end(self) -> bytes:
        """Every open item done, then the whole response."""
        status = _final_status(self._finish)
        out = self._close_thought()
        if not any(not item.reasoning for item in self.items):
            out += self._open_message()  # a reply with nothing in it is still a (empty) message
        out += self._close_message(status)
        for item in self.items:
            if item.call is not None and item.status == "in_progress":
                item.status = status
                arguments = "".join(item.parts)
                out += self._event(
                    "response.function_call_arguments.done",
                    {"item_id": item.id, "output_index": item.output_index, "arguments": arguments},
                )
                out += self._event(
                    "response.output_item.done", {"output_index": item.output_index, "item": item.wire()}
                )
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self._event(kind, {"response": self._response(status)})

    def failed(self, error: SomnerError) -> bytes:
        """The final event of a stream whose generation failed: the response so far, with its error."""
        for item in self.items:
            if item.status == "in_progress":
                item.status = "incomplete"
        return self._event("response.failed", {"response": self._response("failed", failure(error))})

    def _add(self, call: ToolCall | None, prefix: str) -> _Item:
        item = _Item(output_index=len(self.items), id=new_id(prefix), call=call)
        self.items.append(item)
        return item

    def _think(self, text: str) -> bytes:
        out = b""
        item = self._thought
        if item is None:
            item = self._thought = self._add(None, "rs")
            item.reasoning = True
            added = {"output_index": item.output_index, "item": reasoning_item(item.id, None, item.status)}
            part = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
            out = self._event("response.output_item.added", added) + self._event(
                "response.content_part.added", {**part, "part": reasoning_part("")}
            )
        item.parts.append(text)
        delta = {"item_id": item.id, "output_index": item.output_index, "content_index": 0, "delta": text}
        return out + self._event("response.reasoning_text.delta", delta)

    def _close_thought(self) -> bytes:
        """The reasoning item done (the answer or a call follows, or the generation ended)."""
        item = self._thought
        if item is None:
            return b""
        self._thought = None
        item.status = "completed" if self._finish is None else _final_status(self._finish)
        text = "".join(item.parts)
        where = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
        return (
            self._event("response.reasoning_text.done", {**where, "text": text})
            + self._event("response.content_part.done", {**where, "part": reasoning_part(text)})
            + self._event("response.output_item.done", {"output_index": item.output_index, "item": item.wire()})
        )

    def _open_message(self) -> bytes:
        item = self._message = self._add(None, "msg")
        added = {"output_index": item.output_index, "item": message_item(item.id, None, item.status)}
        part = {"item_id": item.id, "output_index": item.output_index, "content_index": 0, "part": text_part("")}
        return self._event("response.output_item.added", added) + self._event("response.content_part.added", part)

    def _close_message(self, status: str) -> bytes:
        item = self._message
        if item is None:
            return b""
        self._message = None
        item.status = status
        text = "".join(item.parts)
        where = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
        return (
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            + self._event("response.content_part.done", {**where, "part": text_part(text)})
            + self._event("response.output_item.done", {"output_index": item.output_index, "item": item.wire()})
        )

    def _text(self, text: str) -> bytes:
        out = self._open_message() if self._message is None else b""
        item = self._message
        assert item is not None
        item.parts.append(text)
        delta = {"item_id": item.id, "output_index": item.output_index, "content_index": 0, "delta": text}
        return out + self._event("response.output_text.delta", {**delta, "logprobs": []})

    def _call_delta(self, delta: ToolCallDelta) -> bytes:
        out = b""
        item = self._calls.get(delta.index)
        if item is None:
            out += self._close_message("completed")  # a message's text comes before the calls of its turn
            call = ToolCall(id=_call_id(delta.id), name=delta.name or "", arguments="")
            item = self._calls[delta.index] = self._add(call, "fc")
            out += self._event("response.output_item.added", {"output_index": item.output_index, "item": item.wire()})
        elif delta.name and item.call is not None:
            item.call.name = delta.name
        if delta.arguments:
            item.parts.append(delta.arguments)
            body = {"item_id": item.id, "output_index": item.output_index, "delta": delta.arguments}
            out += self._event("response.function_call_arguments.delta", body)
        return out
