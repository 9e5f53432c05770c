"""Core → Ollama wire: whole responses and NDJSON stream lines for clients.

Stream lines are small dicts serialised with orjson (nothing per token goes through pydantic), each ending in a
newline. Durations are nanoseconds, as Ollama reports them, measured by a `Timeline` on the gateway's clock; the
engine's own prompt and generation timings are used when it reports them.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from somner.core import Chunk, FinishReason, TokenLogprob, ToolCall, ToolCallAssembler, Usage
from somner.errors import SomnerError

MEDIA_TYPE = "application/x-ndjson"


def line(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body) + b"\n"


def error_line(error: SomnerError) -> bytes:
    """A stream's last line when it fails midway (its status can no longer change)."""
    return line({"error": error.message})


def rfc3339(seconds: float) -> str:
    """A Unix time as RFC 3339 in UTC, to the microsecond."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def created_at(now_ns: int | None = None) -> str:
    """Now (or `now_ns`, Unix nanoseconds) as Ollama writes `created_at`: RFC 3339 with nanoseconds."""
    ns = time.time_ns() if now_ns is None else now_ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


@dataclass
class Timeline:
    """Moments of one request (perf_counter nanoseconds): arrival, model ready, first token, end."""

    started: int = field(default_factory=time.perf_counter_ns)
    loaded: int | None = None
    first_token: int | None = None
    ended: int | None = None
    tokens: int = 0  # text pieces seen, for engines that report no usage

    def mark_loaded(self) -> None:
        self.loaded = time.perf_counter_ns()

    def mark_token(self) -> None:
        self.tokens += 1
        if self.first_token is None:
            self.first_token = time.perf_counter_ns()

    def mark_end(self) -> None:
        self.ended = time.perf_counter_ns()

    def durations(self) -> dict[str, int]:
        """total_duration and load_duration (admission, queueing and loading the model, as Ollama counts it)."""
        ended = self.ended if self.ended is not None else time.perf_counter_ns()
        loaded = self.loaded if self.loaded is not None else ended
        return {"total_duration": ended - self.started, "load_duration": loaded - self.started}


def metrics(timeline: Timeline, usage: Usage | None, chunk: Chunk | None) -> dict[str, int]:
    """Ollama's six measurements. Prompt and generation durations come from the engine's timings when it sent
    them, else from the gateway's clock (model ready → first token → end)."""
    ended = timeline.ended if timeline.ended is not None else time.perf_counter_ns()
    loaded = timeline.loaded if timeline.loaded is not None else timeline.started
    first = timeline.first_token if timeline.first_token is not None else ended
    timings = chunk.timings if chunk is not None else None
    prompt_ns = int(timings.prompt_ms * 1e6) if timings is not None and timings.prompt_ms else first - loaded
    eval_ns = int(timings.predicted_ms * 1e6) if timings is not None and timings.predicted_ms else ended - first
    return {
        **timeline.durations(),
        "prompt_eval_count": usage.prompt_tokens if usage is not None else 0,
        "prompt_eval_duration": max(prompt_ns, 0),
        "eval_count": usage.completion_tokens if usage is not None else timeline.tokens,
        "eval_duration": max(eval_ns, 0),
    }


def done_reason(reason: FinishReason | None) -> str:
    """Ollama says "length" when the limit cut the text and "stop" otherwise (a tool call included)."""
    return "length" if reason is FinishReason.LENGTH else "stop"


def arguments_object(arguments: str) -> dict[str, Any]:
    """Ollama sends tool arguments as an object. Text that is not a JSON object (a model that wrote nonsense
    under `auto`) is passed on whole under "arguments" rather than lost."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": i, "name": c.name, "arguments": arguments_object(c.arguments)}}
        for i, c in enumerate(calls)
    ]


def logprobs(items: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": t.bytes,
            "top_logprobs": [{"token": o.token, "logprob": o.logprob, "bytes": o.bytes} for o in t.top],
        }
        for t in items
    ]


def _message(text: str, calls: list[ToolCall] | None = None, thinking: str = "") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = tool_calls(calls)
    return message


class _Stream:
    """NDJSON lines of one streamed generation; `chunk` returns the bytes for one core chunk (maybe none)."""

    def __init__(self, model: str, timeline: Timeline) -> None:
        self.model = model
        self.timeline = timeline

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": created_at()}

    def _piece(self, chunk: Chunk) -> dict[str, Any]:
        raise NotImplementedError

    def _end(self, chunk: Chunk) -> dict[str, Any]:
        raise NotImplementedError

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.text or chunk.reasoning or chunk.logprobs:
            self.timeline.mark_token()
            body = {**self._head(), **self._piece(chunk), "done": False}
            if chunk.logprobs:
                body["logprobs"] = logprobs(chunk.logprobs)
            out += line(body)
        if chunk.finish_reason is not None:
            self.timeline.mark_end()
            out += line(
                {
                    **self._head(),
                    **self._end(chunk),
                    "done": True,
                    "done_reason": done_reason(chunk.finish_reason),
                    **metrics(self.timeline, chunk.usage, chunk),
                }
            )
        return out


class ChatStream(_Stream):
    """`/api/chat` lines. Tool calls are sent whole, in one line before the last, once their arguments are."""

    def __init__(self, model: str, timeline: Timeline) -> None:
        super().__init__(model, timeline)
        self.calls = ToolCallAssembler()

    def _piece(self, chunk: Chunk) -> dict[str, Any]:
        return {"message": _message(chunk.text, thinking=chunk.reasoning)}

    def _end(self, chunk: Chunk) -> dict[str, Any]:
        return {"message": _message("")}

    def chunk(self, chunk: Chunk) -> bytes:
        if chunk.tool_calls:
            self.calls.add(chunk.tool_calls)
        out = b""
        if chunk.finish_reason is not None and self.calls.calls():
            out = line({**self._head(), "message": _message("", self.calls.calls()), "done": False})
        return out + super().chunk(chunk)


class GenerateStream(_Stream):
    """`/api/generate` lines."""

    def _piece(self, chunk: Chunk) -> dict[str, Any]:
        if chunk.reasoning:
            return {"response": chunk.text, "thinking": chunk.reasoning}
        return {"response": chunk.text}

    def _end(self, chunk: Chunk) -> dict[str, Any]:
        return {"response": ""}


def _finished(timeline: Timeline, last: Chunk) -> dict[str, Any]:
    timeline.mark_end()
    return {"done": True, "done_reason": done_reason(last.finish_reason), **metrics(timeline, last.usage, last)}


def chat_response(
    model: str,
    timeline: Timeline,
    text: str,
    last: Chunk,
    *,
    calls: list[ToolCall],
    token_logprobs: list[TokenLogprob] | None = None,
    thinking: str = "",
) -> dict[str, Any]:
    message = _message(text, calls, thinking)
    body = {"model": model, "created_at": created_at(), "message": message, **_finished(timeline, last)}
    if token_logprobs is not None:
        body["logprobs"] = logprobs(token_logprobs)
    return body


def generate_response(
    model: str,
    timeline: Timeline,
    text: str,
    last: Chunk,
    *,
    token_logprobs: list[TokenLogprob] | None = None,
    thinking: str = "",
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": created_at(), "response": text}
    if thinking:
        body["thinking"] = thinking
    body.update(_finished(timeline, last))
    if token_logprobs is not None:
        body["logprobs"] = logprobs(token_logprobs)
    return body


def lifecycle_response(model: str, reason: str, *, chat: bool) -> dict[str, Any]:
    """The answer to a request that only loads ("load") or unloads ("unload") the model."""
    body: dict[str, Any] = {"model": model, "created_at": created_at()}
    if chat:
        body["message"] = _message("")
    else:
        body["response"] = ""
    return {**body, "done": True, "done_reason": reason}


def embed_response(model: str, vectors: list[list[float]], timeline: Timeline, prompt_tokens: int) -> dict[str, Any]:
    timeline.mark_end()
    return {"model": model, "embeddings": vectors, **timeline.durations(), "prompt_eval_count": prompt_tokens}


def progress(status: str, *, digest: str | None = None, total: int | None = None, completed: int = 0) -> bytes:
    """A pull's progress line."""
    body: dict[str, Any] = {"status": status}
    if digest is not None:
        body["digest"] = digest
        if total is not None:
            body["total"] = total
        body["completed"] = completed
    return line(body)
