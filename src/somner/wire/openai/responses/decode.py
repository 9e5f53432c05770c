"""Responses API wire → core: a request body into a `ChatRequest`, and what the response object echoes back.

Somner keeps no responses (`store` is answered false): whatever needs a stored response, conversation or prompt
is refused with a 400 that says to send the whole input instead. Input items become chat messages in order:
`instructions` first (as a system message), function calls join the assistant turn they follow, and function
call outputs become tool messages.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from somner.core import (
    IMAGE_MARKER,
    ChatRequest,
    Image,
    Message,
    SamplingParams,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    check_tools,
)
from somner.errors import BadRequest
from somner.wire import images as wire_images
from somner.wire.body import validation_error
from somner.wire.openai import decode as openai_decode
from somner.wire.openai.responses import schemas
from somner.wire.openai.responses.encode import Echo

NOT_KEPT = "Somner does not keep responses: send the whole conversation as 'input' instead."


# -- parsing ------------------------------------------------------------------------------------------------


def _param(loc: tuple[int | str, ...]) -> str | None:
    """A parameter path without pydantic's union markers (`list[...]`, `str`, our type tags)."""
    parts: list[str] = []
    for position, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(str(item))
        elif "[" in item or item in ("str", "dict") or (item in schemas.UNION_TAGS and _after_union(loc, position)):
            continue
        else:
            parts.append(item)
    return ".".join(parts) or None


def _after_union(loc: tuple[int | str, ...], position: int) -> bool:
    """Whether the tag at `position` names a union member: it follows a list index or the `tool_choice` field."""
    previous = loc[position - 1] if position else None
    return isinstance(previous, int) or previous == "tool_choice"


def parse(body: bytes) -> schemas.ResponseRequest:
    """Validate a request body; BadRequest (400) naming the parameter otherwise."""
    try:
        return schemas.ResponseRequest.model_validate_json(body)
    except ValidationError as exc:
        error = validation_error(exc)
        errors = exc.errors(include_url=False)
        first = errors[0]
        if first["type"] == "json_invalid" or not first["loc"]:
            raise error from None
        param = _param(tuple(first["loc"]))
        if first["type"] == "missing":
            raise BadRequest(f"Missing required parameter: '{param}'.", param=param, code=error.code) from None
        # A value that is neither a string nor an array fails both members of the union: say so once.
        kinds = {e["type"] for e in errors if _param(tuple(e["loc"])) == param}
        message = "Input should be a string or an array" if {"list_type", "string_type"} <= kinds else first["msg"]
        raise BadRequest(f"Invalid value for '{param}': {message}.", param=param, code=error.code) from None


# -- the chat request ---------------------------------------------------------------------------------------


def _unsupported(message: str, param: str) -> BadRequest:
    return BadRequest(message, param=param, code="unsupported_parameter")


def _refuse_state(req: schemas.ResponseRequest) -> None:
    if req.previous_response_id is not None:
        raise BadRequest(
            f"Previous response with id '{req.previous_response_id}' not found. {NOT_KEPT}",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    if req.conversation is not None:
        raise _unsupported(f"Conversations are not supported. {NOT_KEPT}", "conversation")
    if req.prompt is not None:
        raise _unsupported("Stored prompts are not supported: send 'instructions' and 'input' instead.", "prompt")
    if req.background:
        raise _unsupported("Background responses are not supported: Somner keeps no responses.", "background")


def _text(parts: list[Any] | str, param: str) -> str:
    text, images = _content(parts, param)
    if images:
        raise BadRequest("Images belong in messages.", param=param, code="unsupported_content")
    return text


def _content(parts: list[Any] | str, param: str) -> tuple[str, list[Image]]:
    """The text of content parts, and their images (each standing in the text as the image marker)."""
    if isinstance(parts, str):
        return parts, []
    texts: list[str] = []
    images: list[Image] = []
    for index, part in enumerate(parts):
        if isinstance(part, schemas.InputText | schemas.OutputText):
            texts.append(part.text)
        elif isinstance(part, schemas.Refusal):
            texts.append(part.refusal)
        elif isinstance(part, schemas.InputImage) and part.file_id is not None:
            raise BadRequest(
                "Images by 'file_id' are not supported (Somner keeps no files): send 'image_url'.",
                param=f"{param}.{index}.file_id",
                code="unsupported_content",
            )
        elif isinstance(part, schemas.InputImage):
            images.append(wire_images.from_url(part.image_url, f"{param}.{index}.image_url"))
            texts.append(IMAGE_MARKER)
        else:
            raise BadRequest(
                f"This model accepts text only; '{part.type}' content is not supported.",
                param=f"{param}.{index}.type",
                code="unsupported_content",
            )
    return "".join(texts), images


def messages(req: schemas.ResponseRequest) -> list[Message]:
    out: list[Message] = []
    if req.instructions is not None:
        out.append(Message(role="system", content=req.instructions))
    if isinstance(req.input, str):
        out.append(Message(role="user", content=req.input))
        return out
    if not req.input:
        raise BadRequest("Invalid value for 'input': it must not be empty.", param="input")
    names: dict[str, str] = {}  # call id → function name, for the tool messages that answer them
    for index, item in enumerate(req.input):
        if isinstance(item, schemas.MessageItem):
            content, images = _content(item.content, f"input.{index}.content")
            message = Message(role=item.role, content=content, images=images)
            wire_images.check_markers(message)
            out.append(message)
        elif isinstance(item, schemas.FunctionCallItem):
            call = ToolCall(id=item.call_id, name=item.name, arguments=item.arguments)
            names[item.call_id] = item.name
            last = out[-1] if out else None
            if last is not None and last.role == "assistant":
                last.tool_calls.append(call)  # the calls of one turn follow its text
            else:
                out.append(Message(role="assistant", content="", tool_calls=[call]))
        elif isinstance(item, schemas.FunctionCallOutputItem):
            content = _text(item.output, f"input.{index}.output")
            out.append(Message(role="tool", content=content, name=names.get(item.call_id), tool_call_id=item.call_id))
        elif item.type == "reasoning":
            continue  # earlier thinking passed back: dropped, as reasoning models' templates drop it
        else:
            raise BadRequest(
                f"Input items of type '{item.type}' are not supported: send messages, function_call and "
                "function_call_output items.",
                param=f"input.{index}.type",
                code="unsupported_value",
            )
    return out


def tools(items: list[Any] | None) -> list[Tool]:
    out: list[Tool] = []
    for index, item in enumerate(items or []):
        if not isinstance(item, schemas.FunctionTool):
            raise BadRequest(
                f"Tools of type '{item.type}' are not supported: Somner offers function tools only.",
                param=f"tools.{index}.type",
                code="unsupported_value",
            )
        tool = Tool(name=item.name, description=item.description)
        if item.parameters is not None:
            tool.parameters = item.parameters
        out.append(tool)
    return out


def tool_choice(choice: Any) -> ToolChoice:
    if choice is None:
        return ToolChoice()
    if isinstance(choice, str):
        return ToolChoice(mode=ToolChoiceMode(choice))
    if isinstance(choice, schemas.FunctionChoice):
        return ToolChoice(mode=ToolChoiceMode.FUNCTION, name=choice.name)
    raise BadRequest(
        f"tool_choice of type '{choice.type}' is not supported: use 'auto', 'none', 'required' or a function.",
        param="tool_choice",
        code="unsupported_value",
    )


def _sampling(req: schemas.ResponseRequest) -> SamplingParams:
    params = SamplingParams(
        max_tokens=req.max_output_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        repeat_penalty=req.repeat_penalty,
        seed=req.seed,
        stop=[req.stop] if isinstance(req.stop, str) else list(req.stop or []),
    )
    fmt = req.text.format if req.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        params.json_mode = True
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.schema_ is None:
            raise BadRequest(
                "text.format of type 'json_schema' needs 'schema'.",
                param="text.format.schema",
                code="missing_required_parameter",
            )
        params.json_mode = True
        params.json_schema = fmt.schema_
    return params


def chat_request(req: schemas.ResponseRequest) -> ChatRequest:
    _refuse_state(req)
    choice = tool_choice(req.tool_choice)
    offered = tools(req.tools)
    check_tools(offered, choice)
    return ChatRequest(
        model=req.model,
        messages=messages(req),
        sampling=_sampling(req),
        stream=bool(req.stream),
        user=req.user,
        tools=offered,
        tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        reasoning=openai_decode.effort(req.reasoning.effort if req.reasoning is not None else None),
    )


# -- what the response repeats ------------------------------------------------------------------------------


def _text_config(req: schemas.ResponseRequest) -> dict[str, Any]:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type != "json_schema":
        return {"format": {"type": fmt.type if fmt is not None else "text"}}
    described = {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.schema_, "strict": fmt.strict}
    if fmt.description is not None:
        described["description"] = fmt.description
    return {"format": described}


def echo(req: schemas.ResponseRequest, core: ChatRequest) -> Echo:
    """The request's settings as the response object repeats them, after the model's defaults were applied."""
    function_tools = [t for t in req.tools or [] if isinstance(t, schemas.FunctionTool)]
    choice: str | dict[str, Any] = core.tool_choice.mode.value
    if core.tool_choice.mode is ToolChoiceMode.FUNCTION:
        choice = {"type": "function", "name": core.tool_choice.name}
    return Echo(
        model=req.model,
        instructions=req.instructions,
        max_output_tokens=core.sampling.max_tokens,
        temperature=core.sampling.temperature,
        top_p=core.sampling.top_p,
        tools=[
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": t.strict,
            }
            for t in function_tools
        ],
        tool_choice=choice,
        parallel_tool_calls=core.parallel_tool_calls,
        text=_text_config(req),
        metadata=dict(req.metadata or {}),
        reasoning_effort=req.reasoning.effort if req.reasoning is not None else None,
        user=req.user,
    )
