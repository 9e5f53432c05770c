"""Requests, chunks and usage as the core sees them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class FinishReason(enum.StrEnum):
    """Why a generation ended."""

    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens reached, or the context is full


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
class Message:
    """One chat message. `content` is plain text; parts were joined by the dialect adapter."""

    role: str
    content: str
    name: str | None = None


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    user: str | None = None


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
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
