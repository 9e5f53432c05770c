"""Core → OpenAI wire: requests for engines, and responses (whole or streamed) for clients.

Streamed chunks are built as small dicts and serialised with orjson; nothing per token goes through pydantic.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from somner.core import (
    AdapterScale,
    ChatRequest,
    Chunk,
    CompletionRequest,
    FinishReason,
    Reasoning,
    SamplingParams,
    Timings,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    TopLogprob,
    Usage,
)
from somner.core.streams import Collected
from somner.errors import SomnerError
from somner.wire.images import content_parts
from somner.wire.sse import DONE, event

DONE_EVENT = event(DONE)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# -- requests (gateway → engine) ------------------------------------------------------------------------


_SAMPLING_FIELDS = (
    # (core name, wire name): llama-server's names, so that llama-server engines understand what they have.
    ("max_tokens", "max_tokens"),
    ("temperature", "temperature"),
    ("temperature_last", "temperature_last"),
    ("dynatemp_range", "dynatemp_range"),
    ("dynatemp_exponent", "dynatemp_exponent"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("typical_p", "typical_p"),
    ("top_a", "top_a"),
    ("tfs", "tfs"),
    ("top_n_sigma", "top_n_sigma"),
    ("xtc_probability", "xtc_probability"),
    ("xtc_threshold", "xtc_threshold"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("repeat_penalty", "repeat_penalty"),
    ("repeat_last_n", "repeat_last_n"),
    ("dry_multiplier", "dry_multiplier"),
    ("dry_base", "dry_base"),
    ("dry_allowed_length", "dry_allowed_length"),
    ("dry_range", "dry_penalty_last_n"),
    ("dry_sequence_breakers", "dry_sequence_breakers"),
    ("mirostat", "mirostat"),
    ("mirostat_tau", "mirostat_tau"),
    ("mirostat_eta", "mirostat_eta"),
    ("min_tokens", "min_tokens"),
    ("seed", "seed"),
    ("grammar", "grammar"),
)


def sampling_fields(params: SamplingParams) -> dict[str, Any]:
    """The request's sampling as body fields for an engine: every field that is set (the worker reads them all)."""
    body: dict[str, Any] = {}
    for name, wire_name in _SAMPLING_FIELDS:
        value = getattr(params, name)
        if value is not None:
            body[wire_name] = value
    for name in ("banned_strings", "banned_tokens", "allowed_tokens"):
        values = getattr(params, name)
        if values:
            body[name] = list(values)
    if params.stop:
        body["stop"] = list(params.stop)
    if params.ignore_eos:
        body["ignore_eos"] = True
    if params.logit_bias:
        body["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
    if params.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": params.json_schema},
        }
    elif params.json_mode:
        body["response_format"] = {"type": "json_object"}
    return body


def tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def tools(items: list[Tool]) -> list[dict[str, Any]]:
    out = []
    for tool in items:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
        if tool.description is not None:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode is ToolChoiceMode.FUNCTION:
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode.value


def chat_request(req: ChatRequest, *, stream: bool = True) -> dict[str, Any]:
    """The request to an OpenAI engine: streamed with usage (the gateway counts as it relays), or whole."""
    messages = []
    for m in req.messages:
        item: dict[str, Any] = {"role": m.role, "content": content_parts(m)}
        if m.name:
            item["name"] = m.name
        if m.tool_calls:
            item["tool_calls"] = tool_calls(m.tool_calls)
        if m.tool_call_id is not None:
            item["tool_call_id"] = m.tool_call_id
        messages.append(item)
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    body.update(sampling_fields(req.sampling))
    if req.tools:
        body["tools"] = tools(req.tools)
        body["tool_choice"] = tool_choice(req.tool_choice)
        if not req.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    if req.sampling.logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = req.sampling.logprobs
    if req.n != 1:
        body["n"] = req.n
    if req.lora:
        body["lora"] = lora(req.lora)
    body.update(reasoning_fields(req.reasoning))
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def reasoning_fields(options: Reasoning) -> dict[str, Any]:
    """The reasoning options as llama-server's fields (Somner's engine reads the same), only those that are set."""
    body: dict[str, Any] = {}
    if options.format is not None:
        body["reasoning_format"] = options.format.value
    if options.budget_tokens is not None:
        body["reasoning_budget"] = options.budget_tokens
    switches: dict[str, Any] = {}
    if options.enabled is not None:
        switches["enable_thinking"] = options.enabled
    if options.effort is not None:
        switches["reasoning_effort"] = options.effort  # (gpt-oss's template reads it)
    if switches:
        body["chat_template_kwargs"] = switches
    return body


def lora(items: list[AdapterScale]) -> list[dict[str, Any]]:
    return [{"id": i.id, "scale": i.scale} if i.id is not None else {"name": i.name, "scale": i.scale} for i in items]


def completion_request(req: CompletionRequest, *, stream: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "prompt": req.prompt}
    body.update(sampling_fields(req.sampling))
    if req.sampling.logprobs is not None:
        body["logprobs"] = req.sampling.logprobs
    if req.n != 1:
        body["n"] = req.n
    if req.lora:
        body["lora"] = lora(req.lora)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def embedding_request(model: str, inputs: Sequence[str] | Sequence[Sequence[int]]) -> dict[str, Any]:
    return {"model": model, "input": list(inputs), "encoding_format": "float"}


# -- responses (→ client) -------------------------------------------------------------------------------


def usage(u: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }
    if u.reasoning_tokens:
        body["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return body


def timings(t: Timings, u: Usage) -> dict[str, Any]:
    """llama-server's `timings` extension."""
    prompt_n = u.prompt_tokens - u.cached_tokens
    return {
        "prompt_n": prompt_n,
        "prompt_ms": t.prompt_ms,
        "predicted_n": u.completion_tokens,
        "predicted_ms": t.predicted_ms,
        "cache_n": u.cached_tokens,
    }


def error_body(error: SomnerError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}


def error_event(error: SomnerError) -> bytes:
    return event(orjson.dumps(error_body(error)))


def _entry(item: TokenLogprob | TopLogprob) -> dict[str, Any]:
    """One token's logprobs entry, with its id (llama-server's extension) when known."""
    entry: dict[str, Any] = {"token": item.token, "logprob": item.logprob, "bytes": item.bytes}
    if item.id is not None:
        entry["id"] = item.id
    return entry


def logprobs_content(items: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [{**_entry(lp), "top_logprobs": [_entry(t) for t in lp.top]} for lp in items]


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": logprobs_content(items), "refusal": None}


class CompletionLogprobs:
    """The legacy completions logprobs shape; tracks text offsets across chunks. Extension: `content`, the same
    entries as a chat's logprobs (as llama-server adds it), with what the legacy shape loses (ids, bytes,
    alternatives whose text is alike)."""

    def __init__(self) -> None:
        self.offset = 0

    def encode(self, items: list[TokenLogprob]) -> dict[str, Any]:
        offsets = []
        for lp in items:
            offsets.append(self.offset)
            self.offset += len(lp.token)
        return {
            "tokens": [lp.token for lp in items],
            "token_logprobs": [lp.logprob for lp in items],
            "top_logprobs": [_top_by_text(lp.top) for lp in items],
            "text_offset": offsets,
            "content": logprobs_content(items),
        }


def _top_by_text(top: list[TopLogprob]) -> dict[str, float]:
    """The legacy alternatives, text -> logprob, most likely first; of alternatives whose text is alike (bytes of
    partial characters), the most likely."""
    out: dict[str, float] = {}
    for item in top:
        out.setdefault(item.token, item.logprob)
    return out


class _EventStream:
    """Events of one streamed response: the envelope fields are fixed once, each event adds its choices."""

    object_name = ""
    id_prefix = ""

    def __init__(self, model: str, *, include_usage: bool, with_timings: bool = False) -> None:
        self.id = new_id(self.id_prefix)
        self.model = model
        self.created = now()
        self.include_usage = include_usage
        self.with_timings = with_timings

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.object_name,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = None
        body.update(extra)
        return event(orjson.dumps(body))


LEGACY_FINISH = "function_call"
"""The finish reason of a call in OpenAI's legacy function calling (`tool_calls` in the current API)."""


def _finish_reason(reason: FinishReason, legacy_functions: bool) -> str:
    return LEGACY_FINISH if legacy_functions and reason is FinishReason.TOOL_CALLS else reason.value


def legacy_function_call(deltas: list[ToolCallDelta]) -> dict[str, Any] | None:
    """A streamed call's pieces as a legacy `function_call` delta: the first call only (a legacy request offers
    at most one call, and engines make one; a second would have no place in the legacy shape)."""
    for delta in deltas:
        if delta.index == 0:
            function: dict[str, Any] = {"arguments": delta.arguments}
            if delta.name is not None:
                function = {"name": delta.name, **function}
            return function
    return None


class ChatStream(_EventStream):
    """`chat.completion.chunk` events for one streamed chat completion (each event about one choice: the chunk's
    `index`, 0 unless the request asked for several, `n`). With `legacy_functions`,
    calls come as `delta.function_call` and end with finish reason "function_call", as in OpenAI's legacy
    function calling."""

    object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def __init__(
        self, model: str, *, include_usage: bool, with_timings: bool = False, legacy_functions: bool = False
    ) -> None:
        super().__init__(model, include_usage=include_usage, with_timings=with_timings)
        self.legacy_functions = legacy_functions

    def start(self, choices: int = 1) -> bytes:
        """The opening event of each choice (its role)."""
        return b"".join(
            self._event(
                [
                    {
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            for index in range(choices)
        )

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.tool_calls:
            delta: dict[str, Any]
            if self.legacy_functions:
                function = legacy_function_call(chunk.tool_calls)
                delta = {"function_call": function} if function is not None else {}
            else:
                delta = {"tool_calls": tool_call_deltas(chunk.tool_calls)}
            if delta:
                out += self._event([{"index": chunk.index, "delta": delta, "logprobs": None, "finish_reason": None}])
        if chunk.reasoning:
            out += self._event(
                [
                    {
                        "index": chunk.index,
                        "delta": {"reasoning_content": chunk.reasoning},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        if chunk.text or chunk.logprobs:
            out += self._event(
                [
                    {
                        "index": chunk.index,
                        "delta": {"content": chunk.text},
                        "logprobs": chat_logprobs(chunk.logprobs) if chunk.logprobs else None,
                        "finish_reason": None,
                    }
                ]
            )
        if chunk.finish_reason is not None:
            extra: dict[str, Any] = {}
            if self.with_timings and chunk.timings is not None and chunk.usage is not None:
                extra["timings"] = timings(chunk.timings, chunk.usage)
            finish = _finish_reason(chunk.finish_reason, self.legacy_functions)
            choice = {"index": chunk.index, "delta": {}, "logprobs": None, "finish_reason": finish}
            out += self._event([with_stop_reason(choice, chunk)], **extra)
            if self.include_usage and chunk.usage is not None:
                out += self._event([], usage=usage(chunk.usage))
        return out


def with_stop_reason(choice: dict[str, Any], chunk: Chunk) -> dict[str, Any]:
    """The choice, with vLLM's `stop_reason` extension (the stop string that ended it) when one did."""
    if chunk.stop_sequence is not None:
        choice["stop_reason"] = chunk.stop_sequence
    return choice


def tool_call_deltas(deltas: list[ToolCallDelta]) -> list[dict[str, Any]]:
    out = []
    for delta in deltas:
        item: dict[str, Any] = {"index": delta.index}
        function: dict[str, Any] = {"arguments": delta.arguments}
        if delta.id is not None:
            item["id"] = delta.id
            item["type"] = "function"
        if delta.name is not None:
            function = {"name": delta.name, **function}
        item["function"] = function
        out.append(item)
    return out


class CompletionStream(_EventStream):
    """`text_completion` events for one streamed completion; `index` is the prompt's position."""

    object_name = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, model: str, *, include_usage: bool, with_timings: bool = False) -> None:
        super().__init__(model, include_usage=include_usage, with_timings=with_timings)
        self._logprobs: dict[int, CompletionLogprobs] = {}

    def chunk(self, chunk: Chunk, index: int = 0) -> bytes:
        logprobs = None
        if chunk.logprobs:
            logprobs = self._logprobs.setdefault(index, CompletionLogprobs()).encode(chunk.logprobs)
        extra: dict[str, Any] = {}
        if self.with_timings and chunk.timings is not None and chunk.usage is not None:
            extra["timings"] = timings(chunk.timings, chunk.usage)
        finish = chunk.finish_reason.value if chunk.finish_reason is not None else None
        if not chunk.text and logprobs is None and finish is None:
            return b""
        choice = {"text": chunk.text, "index": index, "logprobs": logprobs, "finish_reason": finish}
        return self._event([with_stop_reason(choice, chunk)], **extra)

    def usage_event(self, total: Usage) -> bytes:
        return self._event([], usage=usage(total)) if self.include_usage else b""


def chat_completion(
    model: str,
    text: str,
    chunk: Chunk,
    logprobs: list[TokenLogprob] | None,
    *,
    calls: list[ToolCall] | None = None,
    with_timings: bool = False,
    legacy_functions: bool = False,
    reasoning: str = "",
) -> dict[str, Any]:
    """A whole `chat.completion` from the collected text, tool calls and the final chunk. With `legacy_functions`
    the (first) call is `message.function_call`, as in OpenAI's legacy function calling. A reasoning model's
    thinking is `message.reasoning_content` (llama-server's and DeepSeek's field)."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["content"] = text or None
        if legacy_functions:
            message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments}
        else:
            message["tool_calls"] = tool_calls(calls)
    body: dict[str, Any] = {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            with_stop_reason(
                {
                    "index": 0,
                    "message": message,
                    "logprobs": chat_logprobs(logprobs) if logprobs is not None else None,
                    "finish_reason": _finish_reason(chunk.finish_reason or FinishReason.STOP, legacy_functions),
                },
                chunk,
            )
        ],
        "usage": usage(chunk.usage or Usage()),
    }
    if with_timings and chunk.timings is not None:
        body["timings"] = timings(chunk.timings, chunk.usage or Usage())
    return body


def chat_completion_choices(
    model: str,
    results: Sequence[Collected],
    total: Usage,
    *,
    with_timings: bool = False,
    legacy_functions: bool = False,
) -> dict[str, Any]:
    """A whole `chat.completion` with one choice per result (`n` > 1), choice i from `results[i]`; `total`: the
    usage of them all."""
    bodies = [
        chat_completion(
            model,
            result.text,
            result.last,
            result.logprobs,
            calls=result.tool_calls.calls(),
            legacy_functions=legacy_functions,
            reasoning=result.reasoning,
        )
        for result in results
    ]
    body = bodies[0]
    body["choices"] = [{**each["choices"][0], "index": index} for index, each in enumerate(bodies)]
    body["usage"] = usage(total)
    timed = [r.last.timings for r in results if r.last.timings is not None]
    if with_timings and timed:
        worst = Timings(
            prompt_ms=max(t.prompt_ms for t in timed), predicted_ms=max(t.predicted_ms for t in timed)
        )  # (the choices ran side by side: the request took as long as the slowest)
        body["timings"] = timings(worst, total)
    return body


def completion(model: str, results: Sequence[Collected], *, with_timings: bool = False) -> dict[str, Any]:
    """A whole `text_completion`, one choice per result: per prompt, its `n` choices in order."""
    total = Usage()
    choices = []
    for index, result in enumerate(results):
        total.add(result.last.usage)
        choice = {
            "text": result.text,
            "index": index,
            "logprobs": CompletionLogprobs().encode(result.logprobs) if result.logprobs is not None else None,
            "finish_reason": result.finish_reason.value,
        }
        choices.append(with_stop_reason(choice, result.last))
    body: dict[str, Any] = {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": now(),
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage(total),
    }
    if with_timings and len(results) == 1 and results[0].last.timings is not None:
        body["timings"] = timings(results[0].last.timings, total)
    return body


def embeddings(model: str, vectors: list[list[float]], prompt_tokens: int, encoding: str) -> dict[str, Any]:
    data = []
    for index, vector in enumerate(vectors):
        value: list[float] | str = vector
        if encoding == "base64":
            import numpy as np  # (imported on use: the gateway needs it only for embeddings)

            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_card(model_id: str, created: int, **extensions: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "somner", **extensions}
