"""Tool calling in the engine: offering tools to the model, forcing a call, and finding calls in its output.

Offering. A chat template that renders tools itself (found by rendering a probe tool at load) gets them as the
`tools` variable, in OpenAI's shape, and messages with their `tool_calls`. Any other template gets the generic
prompt: `GENERIC_INSTRUCTIONS` and the tool list are added to the system message, earlier calls become
`<tool_call>` blocks in the assistant's text and tool results become `<tool_response>` blocks in a user turn.

Forcing. With `tool_choice` "required" or a named function, a grammar admits only `<tool_call>` blocks whose JSON
names an offered function (the named one) and whose `arguments` match that function's parameter schema, so the
output always parses.

Finding. `ToolCallParser` reads the output as it streams. Text that cannot be the start of a call is passed on at
once; from an opening marker on (`<tool_call>`, `[TOOL_CALLS]`, `<|python_tag|>`, or a JSON object or array at
the very start, as Llama 3 answers) the rest is held and parsed at the end. Calls that parse and name offered
functions come back as `ToolCall`s; anything else is returned as ordinary text, so nothing is lost.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import AsyncIterator
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from somner.core import (
    Chunk,
    FinishReason,
    Message,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
)
from somner.errors import BadRequest

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

GENERIC_INSTRUCTIONS = (
    "You can call the functions listed below. To call one, answer with a block like this, and nothing else:\n"
    f'{CALL_OPEN}\n{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}\n{CALL_CLOSE}\n'
    "Use one block per call. If no function is needed, answer normally.\n\nFunctions:\n"
)
_REQUIRED_NOTE = "You must call at least one of these functions.\n"
_NAMED_NOTE = "You must call the function {name}.\n"

# Markers that open a tool call anywhere in the output, and those that count only at its very start.
_ANYWHERE = (CALL_OPEN, "[TOOL_CALLS]")
_AT_START = ("<|python_tag|>", "{", "[")
_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def openai_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    """The tools as chat templates expect them (OpenAI's shape)."""
    out = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
        if tool.description:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def offered(tools: list[Tool], choice: ToolChoice) -> list[Tool]:
    """The tools the model is shown: none for "none", only the named one for a named choice (the choice was
    checked with `core.check_tools`)."""
    if choice.mode is ToolChoiceMode.NONE:
        return []
    if choice.mode is ToolChoiceMode.FUNCTION:
        return [t for t in tools if t.name == choice.name]
    return tools


# -- the generic prompt ---------------------------------------------------------------------------------


def call_block(call: ToolCall) -> str:
    body = json.dumps({"name": call.name, "arguments": _arguments_value(call.arguments)})
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def _arguments_value(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def generic_messages(messages: list[Message], tools: list[Tool], choice: ToolChoice) -> list[Message]:
    """Messages for a template that knows nothing of tools: instructions in the system message, calls and
    results as text."""
    out: list[Message] = []
    if tools:
        listing = json.dumps(openai_tools(tools), indent=1)
        note = ""
        if choice.mode is ToolChoiceMode.REQUIRED:
            note = _REQUIRED_NOTE
        elif choice.mode is ToolChoiceMode.FUNCTION:
            note = _NAMED_NOTE.format(name=choice.name)
        instructions = GENERIC_INSTRUCTIONS + listing + "\n" + note
        if messages and messages[0].role in ("system", "developer"):
            first = messages[0]
            out.append(Message(role=first.role, content=f"{first.content}\n\n{instructions}".strip()))
            messages = messages[1:]
        else:
            out.append(Message(role="system", content=instructions.strip()))
    for message in messages:
        if message.role == "tool":
            result = f"<tool_response>\n{message.content}\n</tool_response>"
            if out and out[-1].role == "user" and out[-1].content.endswith("</tool_response>"):
                out[-1] = Message(role="user", content=f"{out[-1].content}\n{result}")
            else:
                out.append(Message(role="user", content=result))
        elif message.tool_calls:
            blocks = "\n".join(call_block(c) for c in message.tool_calls)
            text = f"{message.content}\n{blocks}" if message.content else blocks
            out.append(Message(role=message.role, content=text, name=message.name))
        else:
            out.append(message)
    return out


def template_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages for a template that renders tools: OpenAI's shape, arguments as objects (as templates use them)."""
    items: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.name:
            item["name"] = message.name
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _arguments_value(c.arguments)},
                }
                for c in message.tool_calls
            ]
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        items.append(item)
    return items


# -- forcing a call -------------------------------------------------------------------------------------


def _rebase_refs(schema: Any, base: str) -> Any:
    """A copy of `schema` whose local `$ref`s ("#/...") point into it at `base` inside a larger document."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                out[key] = base + value[1:]
            else:
                out[key] = _rebase_refs(value, base)
        return out
    if isinstance(schema, list):
        return [_rebase_refs(item, base) for item in schema]
    return schema


def _call_schema(tool: Tool, base: str) -> dict[str, Any]:
    parameters = tool.parameters or {}
    if "type" not in parameters and not any(k in parameters for k in ("$ref", "anyOf", "oneOf", "allOf")):
        parameters = {"type": "object", **parameters}
    arguments = _rebase_refs(parameters, f"{base}/properties/arguments")
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": arguments},
        "required": ["name", "arguments"],
    }


def forced_grammar(tools: list[Tool], *, parallel: bool) -> str:
    """GBNF admitting one (or, with `parallel`, one or more) `<tool_call>` blocks calling the given tools."""
    if len(tools) == 1:
        schema = _call_schema(tools[0], "#")
    else:
        # Each call schema under a named definition: the converter resolves refs through mappings, not lists.
        schema = {
            "anyOf": [{"$ref": f"#/$defs/call-{i}"} for i in range(len(tools))],
            "$defs": {f"call-{i}": _call_schema(tool, f"#/$defs/call-{i}") for i, tool in enumerate(tools)},
        }
    converter = SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        resolved = converter.resolve_refs(schema, "tools")
        rule = converter.visit(resolved, "tool-call")  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, KeyError, AssertionError, NotImplementedError, RecursionError) as exc:
        raise BadRequest(f"The tools' parameter schemas cannot be enforced: {exc}", param="tools") from exc
    block = f'"<tool_call>\\n" {rule} "\\n</tool_call>"'
    root = f'root ::= {block} ( "\\n" {block} )*' if parallel else f"root ::= {block}"
    rules: str = converter.format_grammar()  # type: ignore[no-untyped-call]
    return f"{rules}\n{root}\n"


# -- finding calls in the output ------------------------------------------------------------------------


def _could_open(text: str, markers: tuple[str, ...]) -> bool:
    return any(marker.startswith(text) for marker in markers)


def _opening(text: str, markers: tuple[str, ...]) -> bool:
    return any(text.startswith(marker) for marker in markers)


class ToolCallParser:
    """Splits a streamed output into text to show now and tool calls found at the end.

    `feed(piece)` returns the text that can be shown (it holds back what may open a call); `finish()` returns the
    rest of the text and the calls.
    """

    def __init__(self, tools: list[Tool], *, parallel: bool = True) -> None:
        self._names = {t.name for t in tools}
        self._parallel = parallel
        self._at_start = True
        self._pending = ""  # text held because it may open a call
        self._captured: str | None = None  # everything from an opening marker on

    def feed(self, piece: str) -> str:
        if self._captured is not None:
            self._captured += piece
            return ""
        text = self._pending + piece
        self._pending = ""
        if self._at_start:
            stripped = text.lstrip()
            if not stripped:
                self._pending = text
                return ""
            markers = _ANYWHERE + _AT_START
            if _opening(stripped, markers):
                self._captured = stripped
                return ""
            if _could_open(stripped, markers):
                self._pending = text
                return ""
            self._at_start = False
        return self._scan(text)

    def _scan(self, text: str) -> str:
        """Pass text on up to an opening marker (then capture) or a possible start of one (then hold)."""
        found = min(((text.find(m), m) for m in _ANYWHERE if m in text), default=None)
        if found is not None:
            at = found[0]
            self._captured = text[at:]
            return text[:at]
        for size in range(min(len(text), max(map(len, _ANYWHERE)) - 1), 0, -1):
            if _could_open(text[-size:], _ANYWHERE):
                self._pending = text[-size:]
                return text[:-size]
        return text

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(text not yet shown, calls). Held text that was not a valid call comes back as text."""
        if self._captured is None:
            rest, self._pending = self._pending, ""
            return rest, []
        captured, self._captured = self._captured, None
        calls = parse_calls(captured, self._names)
        if calls is None:
            return captured, []
        return "", calls if self._parallel else calls[:1]


def parse_calls(text: str, names: set[str]) -> list[ToolCall] | None:
    """The calls in `text` (which starts with an opening marker), or None when it is not a well-formed set of
    calls of the offered functions."""
    text = text.strip()
    objects: list[Any] = []
    if text.startswith(CALL_OPEN):
        rest = text
        while rest.startswith(CALL_OPEN):
            body, closed, rest = rest[len(CALL_OPEN) :].partition(CALL_CLOSE)
            value = _json_values(body)
            if value is None:
                if not closed and objects:
                    break  # a last block cut off (max_tokens): the complete calls before it stand
                return None
            objects.extend(value)
            rest = rest.lstrip()
        if rest and not (objects and CALL_OPEN.startswith(rest)):  # (a next block cut off at its marker)
            return None
    elif text.startswith("[TOOL_CALLS]"):
        body = text[len("[TOOL_CALLS]") :].strip()
        named = re.fullmatch(r"([A-Za-z0-9_.-]+)\[ARGS\](.*)", body, re.DOTALL)
        if named is not None:
            arguments = _json_values(named.group(2))
            if arguments is None or len(arguments) != 1:
                return None
            objects.append({"name": named.group(1), "arguments": arguments[0]})
        else:
            values = _json_values(body)
            if values is None:
                return None
            objects.extend(values)
    else:
        values = _json_values(text.removeprefix("<|python_tag|>"))
        if values is None:
            return None
        objects.extend(values)
    calls: list[ToolCall] = []
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        call = _call(obj, names)
        if call is None:
            return None
        if (call.name, call.arguments) not in seen:  # a small model may repeat itself; one call is enough
            seen.add((call.name, call.arguments))
            calls.append(call)
    return calls or None


def _json_values(text: str) -> list[Any] | None:
    """The JSON values in `text`, one after another (separated by whitespace or ';'); arrays are flattened."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    at, text = 0, text.strip()
    while at < len(text):
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            return None
        values.extend(value if isinstance(value, list) else [value])
        while at < len(text) and (text[at].isspace() or text[at] == ";"):
            at += 1
    return values or None


def _call(obj: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(name, str) or name not in names:
        return None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(id=new_call_id(), name=name, arguments=json.dumps(arguments, ensure_ascii=False))


async def with_tool_calls(chunks: AsyncIterator[Chunk], parser: ToolCallParser) -> AsyncIterator[Chunk]:
    """The chunks of a generation with its tool calls taken out of the text: held text is released as soon as
    it cannot open a call, and the calls come whole, in one chunk before the final one (finish reason
    `tool_calls`)."""
    held: list[TokenLogprob] = []
    async for chunk in chunks:
        shown = parser.feed(chunk.text) if chunk.text else ""
        if chunk.logprobs:
            held.extend(chunk.logprobs)
        if chunk.finish_reason is None:
            if shown or chunk.reasoning:  # (a reasoning model's thinking goes on as it comes)
                yield Chunk(text=shown, reasoning=chunk.reasoning, logprobs=held or None)
                held = []
            continue
        rest, calls = parser.finish()
        if shown or rest or chunk.reasoning:
            yield Chunk(text=shown + rest, reasoning=chunk.reasoning, logprobs=held or None)
        if calls:
            deltas = [ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments) for i, c in enumerate(calls)]
            yield Chunk(tool_calls=deltas)
        reason = FinishReason.TOOL_CALLS if calls else chunk.finish_reason
        yield Chunk(finish_reason=reason, usage=chunk.usage, timings=chunk.timings)
        return
