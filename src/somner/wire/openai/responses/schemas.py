"""Responses API request bodies as pydantic models, in the spec's field order. Extensions are marked.

Input items, content parts, tools and tool choices are unions told apart by their `type`. Types Somner cannot
serve (images, files, hosted tools, stored items) still parse, into `Unsupported*` members, so that `decode` can
refuse them with a message saying what is not supported instead of a schema error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from somner.wire import sampling
from somner.wire.body import RequestBody, WireObject
from somner.wire.openai.schemas import FUNCTION_NAME


def _type_tag(known: frozenset[str], missing: str, string: str = "string") -> Any:
    """A discriminator by `type`: a known type is its own tag, any other is "other", none at all is `missing`
    (a message item may leave its type out). A plain string is tagged `string`."""

    def tag(value: Any) -> str:
        if isinstance(value, str):
            return string
        kind = value.get("type", missing) if isinstance(value, dict) else getattr(value, "type", missing)
        return kind if kind in known else "other"

    return Discriminator(tag)


class InputText(WireObject):
    type: Literal["input_text"]
    text: str


class OutputText(WireObject):
    """An assistant message's text, as earlier responses returned it (annotations and logprobs are ignored)."""

    type: Literal["output_text"]
    text: str


class Refusal(WireObject):
    type: Literal["refusal"]
    refusal: str


class InputImage(WireObject):
    """An image of a user message: `image_url` a data URL (or an http(s) URL); `file_id` is refused."""

    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class UnsupportedPart(WireObject):
    """input_file, input_audio, ...: refused by `decode`."""

    type: str


ContentPart = Annotated[
    Annotated[InputText, Tag("input_text")]
    | Annotated[OutputText, Tag("output_text")]
    | Annotated[Refusal, Tag("refusal")]
    | Annotated[InputImage, Tag("input_image")]
    | Annotated[UnsupportedPart, Tag("other")],
    _type_tag(frozenset({"input_text", "output_text", "refusal", "input_image"}), "other", string="other"),
]


class MessageItem(WireObject):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: list[ContentPart] | str


class FunctionCallItem(WireObject):
    """A call the model made in an earlier turn (`id` and `status` are accepted and ignored)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(WireObject):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: list[ContentPart] | str


class UnsupportedItem(WireObject):
    """reasoning, item_reference, hosted tool calls, ...: refused by `decode`."""

    type: str


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[UnsupportedItem, Tag("other")],
    _type_tag(frozenset({"message", "function_call", "function_call_output"}), "message", string="message"),
]


class FunctionTool(WireObject):
    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class UnsupportedTool(WireObject):
    """web_search, file_search, code_interpreter, mcp, ...: refused by `decode`."""

    type: str


ToolInput = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[UnsupportedTool, Tag("other")],
    _type_tag(frozenset({"function"}), "other", string="other"),
]


class FunctionChoice(WireObject):
    type: Literal["function"]
    name: str


class UnsupportedChoice(WireObject):
    """A choice of a hosted tool, or `allowed_tools`: refused by `decode`."""

    type: str


ToolChoiceInput = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("string")]
    | Annotated[FunctionChoice, Tag("function")]
    | Annotated[UnsupportedChoice, Tag("other")],
    _type_tag(frozenset({"function"}), "other"),
]


class TextFormat(WireObject):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(WireObject):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # accepted; a model's verbosity is its own


class Reasoning(WireObject):
    """A reasoning model's effort ("none" turns thinking off; see core.reasoning.EFFORT_BUDGETS); `summary` is
    accepted and not applied (the thinking comes whole, as the reasoning item's text)."""

    effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    summary: str | None = None


class ResponseRequest(RequestBody):
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    include: list[str] | None = None
    input: list[InputItem] | str
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=sampling.INT32)
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None = None
    model: str = Field(min_length=1)
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = None
    reasoning: Reasoning | None = None
    store: bool | None = None
    stream: bool | None = False
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    text: TextConfig | None = None
    tool_choice: ToolChoiceInput | None = None
    tools: Annotated[list[ToolInput], Field(max_length=128)] | None = None
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    # Extensions (as on chat completions; the Responses API has no seed or stop of its own):
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    top_k: int | None = Field(default=None, ge=0, le=sampling.INT32)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    keep_alive: float | str | None = None  # Ollama's keep_alive, honoured here too


# The tags above, as they appear in a validation error's location (decode leaves them out of parameter names).
UNION_TAGS = frozenset(
    {"string", "other", "message", "function_call", "function_call_output", "function"}
    | {"input_text", "output_text", "refusal"}
)
