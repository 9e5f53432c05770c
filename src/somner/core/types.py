"""Requests, chunks and usage as the core sees them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class FinishReason(enum.StrEnum):
    """Why a generation ended."""

    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens reached, or the context is full
    TOOL_CALLS = "tool_calls"  # the model called one or more tools


@dataclass(slots=True)
class SamplingParams:
    """Sampling and stopping parameters. `None` means "not set": the engine applies its defaults.

    Keeping "unset" distinct from a value lets per-model defaults be merged under request values.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    # Number of alternatives per position to report; None = no logprobs, 0 = only the chosen token.
    logprobs: int | None = None
    # Constrained output: a JSON schema (None with json_mode=True means "any JSON object"), or raw GBNF.
    json_schema: dict[str, Any] | None = None
    json_mode: bool = False
    grammar: str | None = None
    ignore_eos: bool = False  # never end at an end-of-generation token (benchmarks: exactly max_tokens)


@dataclass(slots=True)
class Tool:
    """A function the model may call: its name, what it does, and its parameters as a JSON schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoiceMode(enum.StrEnum):
    AUTO = "auto"  # the model decides
    NONE = "none"  # no tool calls (the tools are not offered)
    REQUIRED = "required"  # at least one call, constrained by grammar
    FUNCTION = "function"  # a call of the named function, constrained by grammar


@dataclass(slots=True)
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None  # for FUNCTION


@dataclass(slots=True)
class ToolCall:
    """A complete call: `arguments` is JSON text (an object), as OpenAI carries it."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of the call at `index` in a stream: the first piece carries id and name, later ones add
    argument text (engines that stream arguments); Somner's engine sends each call whole in one piece."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Message:
    """One chat message. `content` is plain text; parts were joined by the dialect adapter.

    An assistant message may carry the tool calls it made; a `tool` message answers the call `tool_call_id`.
    """

    role: str
    content: str
    name: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    user: str | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True


@dataclass(slots=True)
class CompletionRequest:
    """A raw completion of one prompt: text, or token ids."""

    model: str
    prompt: str | list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    echo: bool = False
    user: str | None = None


@dataclass(slots=True)
class EmbeddingRequest:
    """Embed each input (text or token ids); results come back in input order."""

    model: str
    inputs: list[str] | list[list[int]]
    user: str | None = None


@dataclass(slots=True)
class EmbeddingResult:
    embeddings: list[list[float]]
    prompt_tokens: int


@dataclass(slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int]


@dataclass(slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[TopLogprob]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage | None) -> None:
        """Accumulate `other` (one prompt's usage) into this total."""
        if other is not None:
            self.prompt_tokens += other.prompt_tokens
            self.completion_tokens += other.completion_tokens
            self.cached_tokens += other.cached_tokens


@dataclass(slots=True)
class Timings:
    """Engine-side durations in milliseconds (llama-server's `timings` extension)."""

    prompt_ms: float = 0.0
    predicted_ms: float = 0.0


@dataclass(slots=True)
class Chunk:
    """A piece of a generation. The last chunk carries `finish_reason` and `usage`."""

    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    stop_sequence: str | None = None  # with finish_reason STOP: the stop string that ended the text, if one did
    usage: Usage | None = None
    timings: Timings | None = None
