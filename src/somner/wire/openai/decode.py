"""OpenAI wire → core: request bodies into core requests, streamed chunks into core chunks."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from somner.core import (
    IMAGE_MARKER,
    AdapterScale,
    ChatRequest,
    Chunk,
    CompletionRequest,
    FinishReason,
    Image,
    Message,
    Reasoning,
    ReasoningFormat,
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
from somner.core.reasoning import EFFORT_BUDGETS
from somner.errors import BadRequest
from somner.wire import images as wire_images
from somner.wire import sampling
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
    temperature, dynatemp_range = sampling.dynamic_temperature(
        req.temperature, req.dynatemp_range, req.min_temp, req.max_temp
    )
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        temperature_last=req.temperature_last,
        dynatemp_range=dynatemp_range,
        dynatemp_exponent=req.dynatemp_exponent,
        top_p=req.top_p,
        top_k=0 if req.top_k == -1 else req.top_k,  # (TabbyAPI's -1: off)
        min_p=req.min_p,
        typical_p=req.typical_p,
        top_a=req.top_a,
        tfs=req.tfs,
        top_n_sigma=req.top_n_sigma,
        xtc_probability=req.xtc_probability,
        xtc_threshold=req.xtc_threshold,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repeat_penalty=req.repeat_penalty,
        repeat_last_n=req.repeat_last_n,
        dry_multiplier=req.dry_multiplier,
        dry_base=req.dry_base,
        dry_allowed_length=req.dry_allowed_length,
        dry_range=req.dry_range,
        dry_sequence_breakers=sampling.breakers(req.dry_sequence_breakers, "dry_sequence_breakers"),
        mirostat=req.mirostat,
        mirostat_tau=req.mirostat_tau,
        mirostat_eta=req.mirostat_eta,
        seed=req.seed,
        stop=_stop_list(req.stop),
        logit_bias=_logit_bias(req.logit_bias),
        banned_strings=sampling.banned_strings(req.banned_strings),
        banned_tokens=sampling.token_ids(req.banned_tokens, "banned_tokens"),
        allowed_tokens=sampling.token_ids(req.allowed_tokens, "allowed_tokens"),
        min_tokens=req.min_tokens,
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


def _content_of(message: schemas.ChatMessage, index: int) -> tuple[str, list[Image]]:
    """A message's text and images (each standing in the text as the image marker, in order)."""
    content = message.content
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[Image] = []
    for number, part in enumerate(content):
        if isinstance(part, schemas.TextPart):
            texts.append(part.text)
        elif isinstance(part, schemas.ImagePart):
            images.append(
                wire_images.from_url(part.image_url.get("url"), f"messages.{index}.content.{number}.image_url")
            )
            texts.append(IMAGE_MARKER)
        else:
            raise BadRequest(
                f"This model accepts text only; messages[{index}] has a '{part.type}' part.",
                param=f"messages.{index}.content",
                code="unsupported_content",
            )
    return "".join(texts), images


def _message(message: schemas.ChatMessage, index: int) -> Message:
    if message.role == "tool" and message.tool_call_id is None:
        raise BadRequest(
            f"Missing required parameter: 'messages[{index}].tool_call_id'.", param=f"messages[{index}].tool_call_id"
        )
    calls = [ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in message.tool_calls or []]
    if message.function_call is not None:
        legacy = message.function_call
        calls.append(ToolCall(id=f"call_{index}", name=legacy.name, arguments=legacy.arguments))
    content, images = _content_of(message, index)
    decoded = Message(
        role=message.role,
        content=content,
        name=message.name,
        tool_calls=calls,
        tool_call_id=message.tool_call_id,
        images=images,
    )
    wire_images.check_markers(decoded)
    return decoded


def _messages(items: list[schemas.ChatMessage]) -> list[Message]:
    """The chat, with legacy function results (`function` messages, which name the function but no call) turned
    into tool results answering the latest call of that function, so engines see one kind of history."""
    out: list[Message] = []
    calls_by_name: dict[str, str] = {}
    for index, item in enumerate(items):
        message = _message(item, index)
        for call in message.tool_calls:
            calls_by_name[call.name] = call.id
        if message.role == "function":
            if not message.name:
                raise BadRequest(
                    f"Missing required parameter: 'messages[{index}].name'.", param=f"messages[{index}].name"
                )
            message.role = "tool"
            message.tool_call_id = calls_by_name.get(message.name, f"call_{index}")
        out.append(message)
    return out


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


def uses_functions(req: schemas.ChatCompletionRequest) -> bool:
    """The request uses OpenAI's legacy function calling (`functions`, `function_call`): it is served as tools
    (one call at most, as legacy calls come one per message) and answered in the legacy shape
    (`message.function_call`, `finish_reason` "function_call"). Mixing the two kinds is a 400."""
    if req.functions is None and req.function_call is None:
        return False
    if req.tools is not None:
        raise BadRequest("Use either 'functions' or 'tools', not both.", param="functions")
    if req.tool_choice is not None:
        raise BadRequest("Use either 'function_call' or 'tool_choice', not both.", param="function_call")
    if req.functions is None:
        raise BadRequest("'function_call' needs 'functions'.", param="function_call")
    return True


def _legacy_tools(req: schemas.ChatCompletionRequest) -> tuple[list[Tool], ToolChoice]:
    """`functions` and `function_call` as tools and a tool choice (checked here, so errors name them)."""
    offered = tools([schemas.ChatTool(type="function", function=f) for f in req.functions or []])
    names = [t.name for t in offered]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise BadRequest(f"Two functions are named '{duplicate}'.", param="functions")
    legacy = req.function_call
    if legacy is None:
        return offered, ToolChoice()
    if isinstance(legacy, str):
        return offered, ToolChoice(mode=ToolChoiceMode(legacy))
    if legacy.name not in names:
        raise BadRequest(
            f"function_call names the function '{legacy.name}', which is not among the functions.",
            param="function_call",
        )
    return offered, ToolChoice(mode=ToolChoiceMode.FUNCTION, name=legacy.name)


def chat_request(req: schemas.ChatCompletionRequest) -> ChatRequest:
    if req.top_logprobs is not None and not req.logprobs:
        raise BadRequest("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    legacy = uses_functions(req)
    if legacy:
        offered, choice = _legacy_tools(req)
    else:
        offered, choice = tools(req.tools), tool_choice(req.tool_choice)
        check_tools(offered, choice)
    return ChatRequest(
        model=req.model,
        messages=_messages(req.messages),
        sampling=_sampling(req, max_tokens, logprobs),
        stream=bool(req.stream),
        n=req.n or 1,
        user=req.user,
        tools=offered,
        tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls is not False and not legacy,
        lora=adapter_scales(req.lora),
        reasoning=reasoning(req),
    )


def effort(value: str | None) -> Reasoning:
    """A named reasoning effort: "none" turns thinking off; the others set its budget (see EFFORT_BUDGETS)."""
    if value is None:
        return Reasoning()
    if value == "none":
        return Reasoning(enabled=False)
    return Reasoning(enabled=True, budget_tokens=EFFORT_BUDGETS[value], effort=value)


def reasoning(req: schemas.ChatCompletionRequest) -> Reasoning:
    """The reasoning options: `reasoning_effort`, or the extensions `reasoning_budget` and
    `chat_template_kwargs.enable_thinking` (which must not say otherwise), `chat_template_kwargs.reasoning_effort`
    (a name for templates that read it, as gpt-oss's does), and `reasoning_format`."""
    options = effort(req.reasoning_effort)
    if req.reasoning_budget is not None:
        if req.reasoning_effort is not None:
            raise BadRequest("Use either 'reasoning_effort' or 'reasoning_budget', not both.", param="reasoning_budget")
        budget = req.reasoning_budget
        options = Reasoning(enabled=budget != 0, budget_tokens=budget if budget > 0 else None)
    switch = (req.chat_template_kwargs or {}).get("enable_thinking")
    if switch is not None:
        if not isinstance(switch, bool):
            raise BadRequest(
                "Invalid value for 'chat_template_kwargs.enable_thinking': expected a boolean.",
                param="chat_template_kwargs.enable_thinking",
            )
        if options.enabled is not None and options.enabled != switch:
            raise BadRequest(
                "'chat_template_kwargs.enable_thinking' contradicts the reasoning effort or budget.",
                param="chat_template_kwargs.enable_thinking",
            )
        options.enabled = switch
    named = (req.chat_template_kwargs or {}).get("reasoning_effort")
    if named is not None:
        if named not in EFFORT_BUDGETS:
            raise BadRequest(
                "Invalid value for 'chat_template_kwargs.reasoning_effort': expected one of "
                + ", ".join(f"'{name}'" for name in EFFORT_BUDGETS)
                + ".",
                param="chat_template_kwargs.reasoning_effort",
            )
        options.effort = named
    if req.reasoning_format is not None:
        options.format = ReasoningFormat(req.reasoning_format)
    return options


def adapter_scales(items: list[schemas.LoraScale] | None) -> list[AdapterScale]:
    """The request's LoRA scales; each names its adapter by `id` or by `name`, not both."""
    out = []
    for index, item in enumerate(items or []):
        if (item.id is None) == (item.name is None):
            raise BadRequest(
                f"Invalid value for 'lora[{index}]': name the adapter by 'id' or by 'name'.", param=f"lora.{index}"
            )
        out.append(AdapterScale(scale=item.scale, id=item.id, name=item.name))
    return out


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
    """One core request per prompt, in order (OpenAI returns `n` choices per prompt: prompt p's choice i has the
    index p * n + i)."""
    if req.suffix:
        raise BadRequest("'suffix' is not supported.", param="suffix", code="unsupported_value")
    if req.echo:
        raise BadRequest("'echo' is not supported.", param="echo", code="unsupported_value")
    items = prompts(req.prompt)
    params = _sampling(req, req.max_tokens, req.logprobs)
    return [
        CompletionRequest(
            model=req.model,
            prompt=item,
            sampling=dataclasses.replace(params),
            stream=bool(req.stream),
            n=req.n or 1,
            user=req.user,
            lora=adapter_scales(req.lora),
        )
        for item in items
    ]


_NOT_SAMPLERS = frozenset({"model", "prompt", "messages", "stream", "stream_options", "n", "suffix", "echo"})


def sampler_fields(values: dict[str, Any]) -> SamplingParams:
    """Sampler parameters under any name a completion request takes (llama-server's, TabbyAPI's and their aliases),
    checked as in a request: the core values they set. For server-wide presets; keys that are not sampler fields
    are left out."""
    body = {key: value for key, value in values.items() if key not in _NOT_SAMPLERS}
    try:
        encoded = orjson.dumps({"model": "-", "prompt": "-", **body})
    except TypeError as exc:
        raise BadRequest(f"A sampler value cannot be read: {exc}") from None
    wire = parse(schemas.CompletionRequest, encoded)
    return _sampling(wire, wire.max_tokens, None)


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
    output = data.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        reasoning_tokens=int(output.get("reasoning_tokens") or 0) if isinstance(output, dict) else 0,
    )


def _timings(data: Any) -> Timings | None:
    if not isinstance(data, dict):
        return None
    return Timings(prompt_ms=float(data.get("prompt_ms") or 0.0), predicted_ms=float(data.get("predicted_ms") or 0.0))


def _token_id(item: dict[str, Any]) -> int | None:
    """The token id of a logprobs entry, where the engine gives one (llama-server's and Somner's `id`)."""
    value = item.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
                    TopLogprob(
                        token=t["token"],
                        logprob=float(t["logprob"]),
                        bytes=list(t.get("bytes") or b""),
                        id=_token_id(t),
                    )
                    for t in item.get("top_logprobs") or []
                ],
                id=_token_id(item),
            )
        )
    return out


def _completion_logprobs(data: Any) -> list[TokenLogprob] | None:
    """The legacy shape, or (when the engine adds it: Somner's worker, llama-server) its `content` list, which
    has what the legacy shape loses: token ids, bytes, and alternatives that look alike."""
    if isinstance(data, dict) and isinstance(data.get("content"), list):
        return _chat_logprobs(data)
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


def _index(choice: dict[str, Any]) -> int:
    """Which choice an event is about (engines send one choice per event, also with `n` > 1)."""
    value = choice.get("index")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


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
    """A `chat.completion.chunk` (its first choice) as a core chunk."""
    chunk = Chunk(usage=_usage(data.get("usage")), timings=_timings(data.get("timings")))
    choices = data.get("choices") or []
    if choices:
        choice = choices[0]
        chunk.index = _index(choice)
        delta = choice.get("delta") or {}
        chunk.text = delta.get("content") or ""
        # (llama-server and Somner's engine: `reasoning_content`; newer vLLM: `reasoning`)
        chunk.reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        chunk.tool_calls = _tool_call_deltas(delta.get("tool_calls"))
        chunk.finish_reason = _finish(choice.get("finish_reason"))
        chunk.stop_sequence = _stop_reason(choice)
        chunk.logprobs = _chat_logprobs(choice.get("logprobs"))
    return chunk


def completion_chunk(data: dict[str, Any]) -> Chunk:
    """A streamed `text_completion` (its first choice) as a core chunk."""
    chunk = Chunk(usage=_usage(data.get("usage")), timings=_timings(data.get("timings")))
    choices = data.get("choices") or []
    if choices:
        choice = choices[0]
        chunk.index = _index(choice)
        chunk.text = choice.get("text") or ""
        chunk.finish_reason = _finish(choice.get("finish_reason"))
        chunk.stop_sequence = _stop_reason(choice)
        chunk.logprobs = _completion_logprobs(choice.get("logprobs"))
    return chunk
