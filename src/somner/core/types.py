"""Requests, chunks and usage as the core sees them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from somner.core.reasoning import Reasoning


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
    # False: temperature before the truncation samplers (HF/TabbyAPI "temperature first"); None or True: last,
    # llama.cpp's order.
    temperature_last: bool | None = None
    # Dynamic temperature (llama.cpp's temp_ext): the temperature varies in [temperature - range, temperature +
    # range] with the normalized entropy of the distribution, raised to `dynatemp_exponent`.
    dynatemp_range: float | None = None
    dynatemp_exponent: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    top_a: float | None = None  # KoboldAI's top-a: drop tokens with p < top_a * p_max^2
    tfs: float | None = None  # tail-free sampling's z (1: off)
    top_n_sigma: float | None = None  # keep logits within n standard deviations of the maximum (<= 0: off)
    xtc_probability: float | None = None  # Exclude Top Choices: how often it acts
    xtc_threshold: float | None = None  # ... on the tokens at least this likely (all but the least likely of them)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None  # the penalties' window: -1 the whole context, 0 off
    dry_multiplier: float | None = None  # DRY ("don't repeat yourself"): 0 off
    dry_base: float | None = None
    dry_allowed_length: int | None = None
    dry_range: int | None = None  # DRY's window: -1 the whole context, 0 off
    dry_sequence_breakers: list[str] | None = None
    mirostat: int | None = None  # 0 off, 1 Mirostat, 2 Mirostat 2.0 (replaces the truncation samplers)
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    # Strings the output never contains (case-insensitive, also across tokens): generation goes back to where one
    # began and chooses another token there.
    banned_strings: list[str] = field(default_factory=list)
    banned_tokens: list[int] = field(default_factory=list)  # never sampled
    allowed_tokens: list[int] = field(default_factory=list)  # when not empty: only these are sampled
    min_tokens: int | None = None  # no end-of-generation token before this many tokens
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


IMAGE_MARKER = "<__media__>"
"""Where an image of a message stands in its `content` (llama.cpp's media marker)."""


@dataclass(slots=True)
class Image:
    """An image of a message: the bytes of an image file, or (until the gateway fetches it) its http(s) URL."""

    data: bytes = b""
    url: str | None = None


@dataclass(slots=True)
class Message:
    """One chat message. `content` is plain text; parts were joined by the dialect adapter.

    An assistant message may carry the tool calls it made; a `tool` message answers the call `tool_call_id`.
    `images` are the message's images (the bytes of image files), each standing in `content` as `IMAGE_MARKER`,
    in order.
    """

    role: str
    content: str
    name: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    images: list[Image] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AdapterScale:
    """A request's scale for one of the model's LoRA adapters, named by its position (`id`, as llama-server) or
    its name (the adapter file's stem)."""

    scale: float
    id: int | None = None
    name: str | None = None


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    n: int = 1  # choices to generate; chunks of choice i carry `index` i
    user: str | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    # The model's LoRA adapters with this request's scales (empty: the model's own scales; given: unlisted
    # adapters get 0, as in llama-server).
    lora: list[AdapterScale] = field(default_factory=list)
    reasoning: Reasoning = field(default_factory=Reasoning)


@dataclass(slots=True)
class CompletionRequest:
    """A raw completion of one prompt: text, or token ids."""

    model: str
    prompt: str | list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    n: int = 1  # choices to generate for the prompt; chunks of choice i carry `index` i
    echo: bool = False
    user: str | None = None
    lora: list[AdapterScale] = field(default_factory=list)  # (see ChatRequest.lora)


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
class RerankRequest:
    """Score how relevant each document is to the query (a reranker model); scores come back in document order."""

    model: str
    query: str
    documents: list[str]
    user: str | None = None


@dataclass(slots=True)
class RerankResult:
    scores: list[float]  # one per document, in the request's order (higher: more relevant)
    prompt_tokens: int


@dataclass(slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int]
    id: int | None = None  # the token id, when the engine says


@dataclass(slots=True)
class TokenLogprob:
    """The chosen token's log-probability under the model's distribution, and the most likely alternatives."""

    token: str
    logprob: float
    bytes: list[int]
    top: list[TopLogprob]
    id: int | None = None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning tokens included
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # of the completion tokens, those of the model's thinking

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage | None) -> None:
        """Accumulate `other` (one prompt's usage) into this total."""
        if other is not None:
            self.prompt_tokens += other.prompt_tokens
            self.completion_tokens += other.completion_tokens
            self.cached_tokens += other.cached_tokens
            self.reasoning_tokens += other.reasoning_tokens


@dataclass(slots=True)
class Timings:
    """Engine-side durations in milliseconds (llama-server's `timings` extension)."""

    prompt_ms: float = 0.0
    predicted_ms: float = 0.0


@dataclass(slots=True)
class Chunk:
    """A piece of a generation. The last chunk carries `finish_reason` and `usage`.

    With several choices (`n`), `index` says whose piece it is; each choice ends with its own `finish_reason`, and
    the stream's last chunk carries the usage of all of them (the prompt counted once)."""

    text: str = ""
    reasoning: str = ""  # the model's thinking, split from `text` (see core/reasoning.py)
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    stop_sequence: str | None = None  # with finish_reason STOP: the stop string that ended the text, if one did
    usage: Usage | None = None
    timings: Timings | None = None
    index: int = 0
