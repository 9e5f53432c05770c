"""OpenAI wire → core: request bodies into core requests, streamed chunks into core chunks."""

from __future__ import annotations

import dataclasses
from typing import Any

from somner.core import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    FinishReason,
    Message,
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
    check_tools,
)
from somner.errors import BadRequest
from somner.wire.body import parse, validation_error
from somner.wire.openai import schemas

__all__ = ["parse", "validation_error"]  # (re-exported: each dialect's decode offers them)


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in (raw or {}).items():
        try:
            bias[int(key)] = value
        except ValueError:
            raise BadRequest(
                f"Invalid value for 'logit_bias': key {key!r} is not a token id.", param="logit_bias"
            ) from None
    return bias


def _sampling(req: schemas._Sampling, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
    if req.n is not None and req.n != 1:
        raise BadRequest("Only n=1 is supported.", param="n", code="unsupported_value")
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        typical_p=req.typical_p,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repeat_penalty=req.repeat_penalty,
        repeat_last_n=req.repeat_last_n,
        seed=req.seed,
        stop=_stop_list(req.stop),
        logit_bias=_logit_bias(req.logit_bias),
        logprobs=logprobs,
        grammar=req.grammar,
        ignore_eos=bool(req.ignore_eos),
    )
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        if req.grammar is not None:
            raise BadRequest("Use either 'grammar' or 'response_format', not both.", param="response_format")
        if fmt.type == "json_object":
            params.json_mode = True
        else:
            if fmt.json_schema is None or fmt.json_schema.schema_ is None:
                raise BadRequest(
                    "response_format of type 'json_schema' needs 'json_schema.schema'.",
                    param="response_format.json_schema",
                    code="missing_required_parameter",
                )
            params.json_mode = True
            params.json_schema = fmt.json_schema.schema_
    return params


def _text_of(message: schemas.ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        if isinstance(part, schemas.TextPart):
            texts.append(part.text)
        else:
            raise BadRequest(
                f"This model accepts text only; messages[{index}] has a '{part.type}' part.",
                param=f"messages.{index}.content",
                code="unsupported_content",
            )
    return "".join(texts)


def _message(message: schemas.ChatMessage, index: int) -> Message:
    if message.role == "tool" and message.tool_call_id is None:
        raise BadRequest(
            f"Missing required parameter: 'messages[{index}].tool_call_id'.", param=f"messages[{index}].tool_call_id"
        )
    calls = [ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in message.tool_calls or []]
    return Message(
        role=message.role,
        content=_text_of(message, index),
        name=message.name,
        tool_calls=calls,
        tool_call_id=message.tool_call_id,
    )


def tool_choice(choice: schemas.ToolChoiceInput | None) -> ToolChoice:
    if choice is None:
        return ToolChoice()
    if isinstance(choice, str):
        return ToolChoice(mode=ToolChoiceMode(choice))
    return ToolChoice(mode=ToolChoiceMode.FUNCTION, name=choice.function.name)


def tools(items: list[schemas.ChatTool] | None) -> list[Tool]:
    out = []
    for item in items or []:
        function = item.function
        tool = Tool(name=function.name, description=function.description)
        if function.parameters is not None:
            tool.parameters = function.parameters
        out.append(tool)
    return out


def chat_request(req: schemas.ChatCompletionRequest) -> ChatRequest:
    if req.top_logprobs is not None and not req.logprobs:
        raise BadRequest("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    choice = tool_choice(req.tool_choice)
    offered = tools(req.tools)
    check_tools(offered, choice)
    return ChatRequest(
        model=req.model,
        messages=[_message(m, i) for i, m in enumerate(req.messages)],
        sampling=_sampling(req, max_tokens, logprobs),
        stream=bool(req.stream),
        user=req.user,
        tools=offered,
        tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls is not False,
    )


def prompts(prompt: schemas.PromptInput) -> list[str] | list[list[int]]:
    """A prompt field as a list of prompts (text, or token ids). A flat list of ints is one prompt."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise BadRequest("Invalid value for 'prompt': it must not be empty.", param="prompt")
    if isinstance(prompt[0], int):
        return [prompt]
    return prompt


def completion_requests(req: schemas.CompletionRequest) -> list[CompletionRequest]:
    """One core request per prompt, in order (OpenAI returns one choice per prompt)."""
    if req.suffix:
        raise BadRequest("'suffix' is not supported.", param="suffix", code="unsupported_value")
    if req.echo:
        raise BadRequest("'echo' is not supported.", param="echo", code="unsupported_value")
    items = prompts(req.prompt)
    sampling = _sampling(req, req.max_tokens, req.logprobs)
    return [
        CompletionRequest(
            model=req.model,
            prompt=item,
            sampling=dataclasses.replace(sampling),
            stream=bool(req.stream),
            user=req.user,
        )
        for item in items
    ]


def embedding_inputs(req: schemas.EmbeddingRequest) -> list[str] | list[list[int]]:
    items = prompts(req.input)
    if len(items) > 2048:
        raise BadRequest("At most 2048 inputs per request.", param="input")
    return items


# -- responses ------------------------------------------------------------------------------------------


def _stop_reason(choice: dict[str, Any]) -> str | None:
    """vLLM's `stop_reason` extension: the stop string that ended the choice (a token id there is ignored)."""
    value = choice.get("stop_reason")
    return value if isinstance(value, str) else None


def _finish(value: Any) -> FinishReason | None:
    if value is None:
        return None
    try:
        return FinishReason(value)
    except ValueError:
        return FinishReason.STOP


def usage_of(event: dict[str, Any]) -> Usage | None:
    """The `usage` object of an event, if it has one."""
    return _usage(event.get("usage"))


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


def _timings(data: Any) -> Timings | None:
    if not isinstance(data, dict):
        return None
    return Timings(prompt_ms=float(data.get("prompt_ms") or 0.0), predicted_ms=float(data.get("predicted_ms") or 0.0))


def _chat_logprobs(data: Any) -> list[TokenLogprob] | None:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        return None
    out = []
    for item in data["content"]:
        out.append(
            TokenLogprob(
                token=item["token"],
                logprob=float(item["logprob"]),
                bytes=list(item.get("bytes") or item["token"].encode()),
                top=[
                    TopLogprob(token=t["token"], logprob=float(t["logprob"]), bytes=list(t.get("bytes") or b""))
                    for t in item.get("top_logprobs") or []
                ],
            )
        )
    return out


def _completion_logprobs(data: Any) -> list[TokenLogprob] | None:
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        return None
    tops = data.get("top_logprobs") or [None] * len(data["tokens"])
    return [
        TokenLogprob(
            token=token,
            logprob=float(lp),
            bytes=list(token.encode()),
            top=[TopLogprob(token=t, logprob=float(v), bytes=list(t.encode())) for t, v in (top or {}).items()],
        )
        for token, lp, top in zip(data["tokens"], data["token_logprobs"], tops, strict=False)
    ]


def _tool_call_deltas(data: Any) -> list[ToolCallDelta] | None:
    if not isinstance(data, list) or not data:
        return None
    deltas = []
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            continue
        function = item["function"] if isinstance(item.get("function"), dict) else {}
        arguments = function.get("arguments")
        index = item.get("index")
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) else position,
                id=item.get("id") if isinstance(item.get("id"), str) else None,
                name=function.get("name") if isinstance(function.get("name"), str) else None,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return deltas or None


def chat_chunk(data: dict[str, Any]) -> Chunk:
    """A `chat.completion.chunk` (choice 0) as a core chunk."""
    chunk = Chunk(usage=_usage(data.get("usage")), timings=_timings(data.get("timings")))
    choices = data.get("choices") or []
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        chunk.text = delta.get("content") or ""
        chunk.tool_calls = _tool_call_deltas(delta.get("tool_calls"))
        chunk.finish_reason = _finish(choice.get("finish_reason"))
        chunk.stop_sequence = _stop_reason(choice)
        chunk.logprobs = _chat_logprobs(choice.get("logprobs"))
    return chunk


def completion_chunk(data: dict[str, Any]) -> Chunk:
    """A streamed `text_completion` (choice 0) as a core chunk."""
    chunk = Chunk(usage=_usage(data.get("usage")), timings=_timings(data.get("timings")))
    choices = data.get("choices") or []
    if choices:
        choice = choices[0]
        chunk.text = choice.get("text") or ""
        chunk.finish_reason = _finish(choice.get("finish_reason"))
        chunk.stop_sequence = _stop_reason(choice)
        chunk.logprobs = _completion_logprobs(choice.get("logprobs"))
    return chunk
