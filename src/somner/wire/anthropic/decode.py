"""Anthropic wire → core: a Messages request body into a core `ChatRequest`.

Content blocks become core messages in order: an assistant turn's text and `tool_use` blocks make one assistant
message carrying its tool calls; a user turn's `tool_result` blocks each become a `tool` message answering its
call (named after the `tool_use` it answers, when the history has it), and its text blocks a user message between
them. A failed result (`is_error`) is marked in its text, since core messages have no such flag. The system prompt
becomes the first message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from somner.core import (
    IMAGE_MARKER,
    ChatRequest,
    Image,
    Message,
    Reasoning,
    SamplingParams,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    check_tools,
)
from somner.errors import BadRequest
from somner.wire import images as wire_images
from somner.wire.anthropic import schemas
from somner.wire.body import parse, validation_error

__all__ = ["parse", "validation_error"]  # (re-exported: each dialect's decode offers them)

ERROR_RESULT_PREFIX = "Error: "


def _unsupported(kind: str, param: str) -> BadRequest:
    noun = "images" if kind == "image" else "documents"
    return BadRequest(
        f"This server's models read text only; it does not support {noun} ('{kind}' block in {param}).",
        param=param,
        code="unsupported_content",
    )


def _image(block: schemas.ImageBlock, param: str) -> Image:
    """An image block's source: base64 data, or a URL (fetched by the gateway from allowed hosts only)."""
    source = block.source
    if source.get("type") == "base64":
        return wire_images.from_base64(source.get("data"), f"{param}.source.data")
    if source.get("type") == "url":
        return wire_images.from_url(source.get("url"), f"{param}.source.url")
    raise BadRequest(f"Invalid value for '{param}.source.type': base64 or url.", param=f"{param}.source.type")


def system_text(system: schemas.SystemParam | None) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system
    return "\n\n".join(block.text for block in system)


def _result_text(block: schemas.ToolResultBlock, param: str) -> str:
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts: list[str] = []
        for position, part in enumerate(content):
            if not isinstance(part, schemas.TextBlock):
                raise _unsupported(part.type, f"{param}.content.{position}")
            parts.append(part.text)
        text = "\n".join(parts)
    return ERROR_RESULT_PREFIX + text if block.is_error else text


def _assistant(blocks: Sequence[schemas.ContentBlock], param: str) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for position, block in enumerate(blocks):
        where = f"{param}.{position}"
        if isinstance(block, schemas.TextBlock):
            texts.append(block.text)
        elif isinstance(block, schemas.ToolUseBlock):
            calls.append(ToolCall(id=block.id, name=block.name, arguments=json.dumps(block.input)))
        elif isinstance(block, schemas.ImageBlock | schemas.DocumentBlock):
            raise _unsupported(block.type, where)
        elif isinstance(block, schemas.ToolResultBlock):
            raise BadRequest(f"A 'tool_result' block belongs in a user message ({where}).", param=where)
        # thinking blocks: dropped (see schemas.ThinkingBlock)
    return Message(role="assistant", content="".join(texts), tool_calls=calls)


def _user(blocks: Sequence[schemas.ContentBlock], param: str, names: dict[str, str]) -> list[Message]:
    out: list[Message] = []
    texts: list[str] = []
    images: list[Image] = []

    def flush() -> None:
        if texts:
            message = Message(role="user", content="".join(texts), images=list(images))
            wire_images.check_markers(message)
            out.append(message)
            texts.clear()
            images.clear()

    for position, block in enumerate(blocks):
        where = f"{param}.{position}"
        if isinstance(block, schemas.TextBlock):
            texts.append(block.text)
        elif isinstance(block, schemas.ToolResultBlock):
            flush()
            out.append(
                Message(
                    role="tool",
                    content=_result_text(block, where),
                    name=names.get(block.tool_use_id),
                    tool_call_id=block.tool_use_id,
                )
            )
        elif isinstance(block, schemas.ImageBlock):
            images.append(_image(block, where))
            texts.append(IMAGE_MARKER)
        elif isinstance(block, schemas.DocumentBlock):
            raise _unsupported(block.type, where)
        elif isinstance(block, schemas.ToolUseBlock):
            raise BadRequest(f"A 'tool_use' block belongs in an assistant message ({where}).", param=where)
    flush()
    return out


def messages(items: list[schemas.MessageParam], system: schemas.SystemParam | None) -> list[Message]:
    if not items:
        raise BadRequest("Invalid value for 'messages': at least one message is required.", param="messages")
    out: list[Message] = []
    prompt = system_text(system)
    if prompt:
        out.append(Message(role="system", content=prompt))
    names: dict[str, str] = {}  # tool_use id → tool name, for the results that answer them
    for index, item in enumerate(items):
        param = f"messages.{index}.content"
        if isinstance(item.content, str):
            out.append(Message(role=item.role, content=item.content))
        elif item.role == "assistant":
            message = _assistant(item.content, param)
            names.update((call.id, call.name) for call in message.tool_calls)
            out.append(message)
        else:
            out.extend(_user(item.content, param, names))
    return out


def tools(items: list[schemas.ToolParam] | None) -> list[Tool]:
    return [Tool(name=t.name, description=t.description, parameters=t.input_schema) for t in items or []]


def tool_choice(choice: schemas.ToolChoiceParam | None) -> tuple[ToolChoice, bool]:
    """The core tool choice, and whether parallel calls are allowed."""
    if choice is None:
        return ToolChoice(), True
    parallel = isinstance(choice, schemas.ToolChoiceNone) or not choice.disable_parallel_tool_use
    if isinstance(choice, schemas.ToolChoiceAny):
        return ToolChoice(mode=ToolChoiceMode.REQUIRED), parallel
    if isinstance(choice, schemas.ToolChoiceTool):
        return ToolChoice(mode=ToolChoiceMode.FUNCTION, name=choice.name), parallel
    if isinstance(choice, schemas.ToolChoiceNone):
        return ToolChoice(mode=ToolChoiceMode.NONE), parallel
    return ToolChoice(), parallel


def reasoning(thinking: schemas.ThinkingParam | None, max_tokens: int | None = None) -> Reasoning:
    """Extended thinking as reasoning options: "enabled" with its `budget_tokens` (at least 1 here, where Anthropic
    asks for 1024: small local models think briefly; below `max_tokens`, as Anthropic requires), "adaptive" (the
    model decides), "disabled". Left out: the model's own setting."""
    if thinking is None:
        return Reasoning()
    if thinking.type == "disabled":
        return Reasoning(enabled=False)
    if thinking.type == "adaptive":
        return Reasoning(enabled=True)
    budget = thinking.budget_tokens
    if budget is None:
        raise BadRequest("thinking.budget_tokens: Field required when thinking is enabled.", param="thinking")
    if budget < 1:
        raise BadRequest("thinking.budget_tokens: Input should be greater than or equal to 1.", param="thinking")
    if max_tokens is not None and budget >= max_tokens:
        raise BadRequest("`max_tokens` must be greater than `thinking.budget_tokens`.", param="thinking")
    return Reasoning(enabled=True, budget_tokens=budget)


def _chat(
    model: str,
    items: list[schemas.MessageParam],
    system: schemas.SystemParam | None,
    tool_items: list[schemas.ToolParam] | None,
    choice_param: schemas.ToolChoiceParam | None,
    thinking: schemas.ThinkingParam | None,
    max_tokens: int | None = None,
) -> ChatRequest:
    options = reasoning(thinking, max_tokens)
    offered = tools(tool_items)
    choice, parallel = tool_choice(choice_param)
    if choice.mode is ToolChoiceMode.REQUIRED and not offered:
        raise BadRequest("tool_choice 'any' needs at least one tool in 'tools'.", param="tool_choice")
    check_tools(offered, choice)
    return ChatRequest(
        model=model,
        messages=messages(items, system),
        tools=offered,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        reasoning=options,
    )


def chat_request(req: schemas.MessageCreateRequest) -> ChatRequest:
    core = _chat(req.model, req.messages, req.system, req.tools, req.tool_choice, req.thinking, req.max_tokens)
    core.sampling = SamplingParams(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        stop=list(req.stop_sequences or []),
    )
    if req.output_config is not None and req.output_config.format is not None:
        core.sampling.json_mode = True
        core.sampling.json_schema = req.output_config.format.schema_
    core.stream = bool(req.stream)
    core.user = req.metadata.user_id if req.metadata is not None else None
    return core


def count_request(req: schemas.CountTokensRequest) -> ChatRequest:
    """The chat a token count is for: the same messages, system prompt and tools a create request would render."""
    return _chat(req.model, req.messages, req.system, req.tools, req.tool_choice, req.thinking)
