"""Anthropic Messages request bodies as pydantic models, in the API reference's field order.

Tolerant of clients (unknown fields such as `cache_control`, `service_tier` or `container` are ignored), strict
about types. Content block types this server cannot serve (images, documents) are accepted here and refused by
`decode` with a message that says why, so the client learns more than "unknown tag".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from somner.wire import sampling
from somner.wire.body import RequestBody, WireObject

TOOL_NAME = r"^[A-Za-z0-9_-]{1,128}$"


class TextBlock(WireObject):
    type: Literal["text"]
    text: str


class ImageBlock(WireObject):
    type: Literal["image"]
    source: dict[str, Any]


class DocumentBlock(WireObject):
    type: Literal["document"]
    source: dict[str, Any]


class ToolUseBlock(WireObject):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


ToolResultContent = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]


class ToolResultBlock(WireObject):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: list[ToolResultContent] | str | None = None
    is_error: bool | None = None


class ThinkingBlock(WireObject):
    """Earlier reasoning a client passes back (as this server returns it); dropped from the prompt, as reasoning
    models' templates drop earlier thinking."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(WireObject):
    role: Literal["user", "assistant"]
    content: list[ContentBlock] | str  # (list first: a bad block's error then names its type)


class ToolParam(WireObject):
    """A client tool. Anthropic's server tools (`web_search_...`, `bash_...`) have other types and are refused."""

    type: Literal["custom"] | None = None
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoiceAuto(WireObject):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(WireObject):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(WireObject):
    type: Literal["tool"]
    name: str = Field(min_length=1)
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(WireObject):
    type: Literal["none"]


ToolChoiceParam = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class ThinkingParam(WireObject):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=0, le=sampling.INT32)


class JsonOutputFormat(WireObject):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(WireObject):
    """Structured outputs: the reply is JSON matching `format.schema` (constrained by grammar). `effort` is
    ignored."""

    format: JsonOutputFormat | None = None


class Metadata(WireObject):
    user_id: str | None = None


SystemParam = list[TextBlock] | str


class MessageCreateRequest(RequestBody):
    model: str = Field(min_length=1)
    messages: list[MessageParam]
    max_tokens: int = Field(ge=1, le=sampling.INT32)
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    stream: bool | None = None
    system: SystemParam | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    thinking: ThinkingParam | None = None
    tool_choice: ToolChoiceParam | None = None
    tools: list[ToolParam] | None = None
    top_k: int | None = Field(default=None, ge=0, le=sampling.INT32)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)


class CountTokensRequest(RequestBody):
    model: str = Field(min_length=1)
    messages: list[MessageParam]
    system: SystemParam | None = None
    thinking: ThinkingParam | None = None
    tool_choice: ToolChoiceParam | None = None
    tools: list[ToolParam] | None = None
