"""Ollama wire → core: request bodies into core requests, with Ollama's `options` mapped onto sampling.

`images` (base64) stand before their message's text; a model without vision refuses them. What Somner cannot do
is refused with a 400 saying so, rather than silently answered differently: `suffix` (no fill-in-the-middle),
`template` overrides (set a model's template in its configuration), and the legacy `context` token arrays (send the
conversation to `/api/chat` instead). Load-time options (`num_ctx`, `num_gpu`, `num_thread`, ...) are accepted and
ignored: in Somner, a model's configuration decides them, and one client must not reload a model shared by many.
"""

from __future__ import annotations

import orjson

from somner.core import (
    IMAGE_MARKER,
    ChatRequest,
    CompletionRequest,
    Image,
    Message,
    Reasoning,
    SamplingParams,
    Tool,
    ToolCall,
    check_tools,
)
from somner.core.reasoning import EFFORT_BUDGETS
from somner.errors import BadRequest
from somner.wire import images as wire_images
from somner.wire import sampling as wire_sampling
from somner.wire.body import parse, validation_error
from somner.wire.ollama import schemas

__all__ = ["parse", "validation_error"]  # (re-exported: each dialect's decode offers them)


def _unsupported(message: str, param: str) -> BadRequest:
    return BadRequest(message, param=param, code="unsupported_value")


def _max_tokens(num_predict: int | None) -> int | None:
    """Ollama's num_predict: -1 is unlimited and -2 fills the context; both leave the limit to the engine, which
    stops at the end of the context. Other values must be positive."""
    if num_predict is None or num_predict in (-1, -2):
        return None
    if num_predict <= 0:
        raise BadRequest(
            "Invalid value for 'options.num_predict': use a positive number, -1 (unlimited) or -2 (fill the context).",
            param="options.num_predict",
        )
    return num_predict


def sampling(
    options: schemas.Options | None,
    fmt: schemas.FormatInput | None,
    *,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
) -> SamplingParams:
    opts = options or schemas.Options()
    stop = opts.stop if opts.stop is not None else []
    params = SamplingParams(
        max_tokens=_max_tokens(opts.num_predict),
        temperature=opts.temperature,
        top_p=opts.top_p,
        top_k=0 if opts.top_k == -1 else opts.top_k,
        min_p=opts.min_p,
        typical_p=opts.typical_p,
        presence_penalty=opts.presence_penalty,
        frequency_penalty=opts.frequency_penalty,
        repeat_penalty=opts.repeat_penalty,
        repeat_last_n=opts.repeat_last_n,
        tfs=opts.tfs_z,
        mirostat=opts.mirostat,
        mirostat_tau=opts.mirostat_tau,
        mirostat_eta=opts.mirostat_eta,
        top_n_sigma=opts.top_n_sigma,
        xtc_probability=opts.xtc_probability,
        xtc_threshold=opts.xtc_threshold,
        dynatemp_range=opts.dynatemp_range,
        dynatemp_exponent=opts.dynatemp_exponent,
        dry_multiplier=opts.dry_multiplier,
        dry_base=opts.dry_base,
        dry_allowed_length=opts.dry_allowed_length,
        dry_range=opts.dry_penalty_last_n,
        dry_sequence_breakers=wire_sampling.breakers(opts.dry_sequence_breakers, "options.dry_sequence_breakers"),
        seed=opts.seed,
        stop=[stop] if isinstance(stop, str) else list(stop),
        logprobs=(top_logprobs or 0) if logprobs else None,
    )
    if isinstance(fmt, dict):
        params.json_mode = True
        params.json_schema = fmt
    elif fmt == "json":
        params.json_mode = True
    elif fmt:
        raise BadRequest(f"Invalid value for 'format': {fmt!r}; use \"json\" or a JSON schema object.", param="format")
    return params


def reasoning(think: bool | str | None) -> Reasoning:
    """Ollama's `think`: true or false, or a level ("low", "medium", "high": a thinking budget, see
    EFFORT_BUDGETS). Left out: the model's own setting."""
    if think is None:
        return Reasoning()
    if isinstance(think, bool):
        return Reasoning(enabled=think)
    if think not in ("low", "medium", "high"):
        raise BadRequest(
            f'invalid think value: {think!r} (expected true, false, "low", "medium" or "high")', param="think"
        )
    return Reasoning(enabled=True, budget_tokens=EFFORT_BUDGETS[think], effort=think)


def _images(images: list[str] | None, param: str) -> list[Image]:
    """A message's `images` (base64): they stand before its text, as the image marker."""
    return [wire_images.from_base64(item, f"{param}.{i}") for i, item in enumerate(images or [])]


def _with_images(role: str, content: str, images: list[Image]) -> Message:
    if IMAGE_MARKER in content and images:
        raise BadRequest(f"The text of a message with images may not contain {IMAGE_MARKER!r}.", param="messages")
    return Message(role=role, content=IMAGE_MARKER * len(images) + content, images=images)


def _tool_calls(calls: list[schemas.ToolCall], index: int) -> list[ToolCall]:
    """Ollama sends arguments as an object and often no id; the core wants JSON text and an id to answer."""
    return [
        ToolCall(
            id=call.id or f"call_{index}_{position}",
            name=call.function.name,
            arguments=orjson.dumps(call.function.arguments).decode(),
        )
        for position, call in enumerate(calls)
    ]


def messages(items: list[schemas.ChatMessage]) -> list[Message]:
    """Core messages. A `tool` message names its tool (`tool_name`), not the call it answers: it is matched to
    the earliest unanswered call of that tool (any tool when unnamed), so engines that need call ids get them."""
    out: list[Message] = []
    unanswered: list[ToolCall] = []
    for index, item in enumerate(items):
        message = _with_images(item.role, item.content, _images(item.images, f"messages.{index}.images"))
        if item.role == "assistant" and item.tool_calls:
            message.tool_calls = _tool_calls(item.tool_calls, index)
            unanswered = list(message.tool_calls)
        elif item.role == "tool":
            message.name = item.tool_name
            answered = next(
                (c for c in unanswered if item.tool_call_id in (None, c.id) and item.tool_name in (None, c.name)),
                None,
            )
            if answered is not None:
                unanswered.remove(answered)
            message.tool_call_id = item.tool_call_id or (answered.id if answered is not None else None)
        out.append(message)
    return out


def tools(items: list[schemas.ChatTool] | None) -> list[Tool]:
    out = []
    for item in items or []:
        tool = Tool(name=item.function.name, description=item.function.description)
        if item.function.parameters is not None:
            tool.parameters = item.function.parameters
        out.append(tool)
    return out


def chat_request(req: schemas.ChatRequest) -> ChatRequest:
    offered = tools(req.tools)
    core = ChatRequest(
        model=req.model,
        messages=messages(req.messages),
        sampling=sampling(req.options, req.format, logprobs=req.logprobs, top_logprobs=req.top_logprobs),
        stream=req.stream,
        tools=offered,
        reasoning=reasoning(req.think),
    )
    check_tools(offered, core.tool_choice)
    return core


def is_load_only(req: schemas.GenerateRequest) -> bool:
    """An empty prompt asks Ollama to load (or, with keep_alive 0, unload) the model and generate nothing."""
    return not req.prompt and not req.images


def generate_request(req: schemas.GenerateRequest) -> ChatRequest | CompletionRequest:
    """`raw`: the prompt goes to the model verbatim, as a completion (`system` is ignored, as Ollama ignores it).
    Otherwise the prompt is the user's turn of a chat, after `system` when given, through the chat template."""
    options = reasoning(req.think)
    images = _images(req.images, "images")
    if req.suffix:
        raise _unsupported("'suffix' (fill-in-the-middle) is not supported.", "suffix")
    if req.template:
        raise _unsupported(
            "'template' overrides are not supported; set the model's `template` in its configuration.", "template"
        )
    if req.context:
        raise _unsupported(
            "'context' token arrays are not supported; send the conversation as messages to /api/chat.", "context"
        )
    params = sampling(req.options, req.format, logprobs=req.logprobs, top_logprobs=req.top_logprobs)
    if req.raw:
        if images:
            raise BadRequest("'images' need the chat template; they cannot be used with 'raw'.", param="images")
        if options.enabled:
            raise BadRequest("'think' needs the chat template; it cannot be used with 'raw'.", param="think")
        return CompletionRequest(model=req.model, prompt=req.prompt, sampling=params, stream=req.stream)
    turns = [Message(role="system", content=req.system)] if req.system else []
    turns.append(_with_images("user", req.prompt, images))
    return ChatRequest(model=req.model, messages=turns, sampling=params, stream=req.stream, reasoning=options)


def embed_inputs(value: str | list[str]) -> list[str]:
    """Texts to embed; empty means load the model only."""
    if isinstance(value, str):
        return [value] if value else []
    if len(value) > 2048:
        raise BadRequest("At most 2048 inputs per request.", param="input")
    return list(value)


def model_name(model: str | None, name: str | None) -> str:
    """`model`, or `name` as older clients call it."""
    chosen = model or name
    if chosen is None:
        raise BadRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    return chosen


_HF_HOSTS = ("hf.co/", "huggingface.co/")


def pull_source(name: str) -> str:
    """The `somner.models.pull` source for a name Ollama clients pull: `hf.co/ORG/REPO[:QUANT]` and
    `huggingface.co/...` (with or without https://) become `hf:ORG/REPO[:QUANT]`; `hf:` sources and URLs of .gguf
    files pass through. Ollama's own library (`llama3`, `qwen2:7b`) is not reachable from Somner."""
    bare = name.removeprefix("https://").removeprefix("http://")
    for host in _HF_HOSTS:
        if bare.startswith(host):
            repo, _, tag = bare[len(host) :].partition(":")
            if repo.count("/") == 1:
                return f"hf:{repo}" + (f":{tag}" if tag and tag != "latest" else "")
    if name.startswith("hf:") or (name.startswith(("http://", "https://")) and name.lower().endswith(".gguf")):
        return name
    raise BadRequest(
        f"Somner cannot pull {name!r} from the Ollama library. Pull GGUF files from Hugging Face as "
        "hf.co/ORG/REPO[:QUANT] (or hf:ORG/REPO[:QUANT]), or give an http(s) URL of a .gguf file.",
        param="model",
        code="unsupported_value",
    )
