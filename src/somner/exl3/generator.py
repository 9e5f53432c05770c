"""The part of ExLlamaV3 the engine uses, as a protocol: load a model folder, tokenize, run jobs in batches.

`exllama.py` implements it over the real library (a CUDA GPU); the tests implement it with a small deterministic
fake on the CPU (`tests/fakes/exl3_generator.py`), so everything above it (the scheduler, request preparation,
the worker's HTTP surface and the gateway around it) is exercised without a GPU. The protocol is kept small on
purpose: stop strings, `max_tokens`, usage and finish reasons are Somner's own work (scheduler.py), not the
library's, so the fake and the real engine end generations the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from somner.core.reasoning import Thought

_ids = itertools.count(1)

CacheType = Literal["f16", "q8_0", "q6", "q4_0"]
CACHE_BITS: dict[CacheType, int | None] = {"f16": None, "q8_0": 8, "q6": 6, "q4_0": 4}
"""ExLlamaV3's quantized cache stores keys and values in 2 to 8 bits; None: FP16."""


@dataclass(frozen=True, slots=True)
class Exl3Config:
    """One worker's model and how to load it (the `somner worker-exl3` options)."""

    model_path: Path  # the EXL3 model folder
    model_id: str
    max_seq_len: int | None = None  # one sequence's context; None: the model's own, capped at 4096
    cache_size: int | None = None  # KV cache tokens shared by all sequences; None: max_seq_len x max_batch_size
    cache_k: CacheType = "f16"
    cache_v: CacheType = "f16"
    max_batch_size: int = 4  # sequences generated together
    chunk_size: int = 2048  # prompt tokens per prefill step
    template: str | None = None  # a built-in name or a Jinja file, over the folder's own
    draft_model: Path | None = None  # an EXL3 folder with the same vocabulary (speculative decoding)
    draft_tokens: int = 4
    loras: tuple[tuple[Path, float], ...] = ()  # PEFT adapter folders and their scales, applied to every request
    gpu_split: tuple[float, ...] = ()  # GB per GPU; empty: autosplit
    tensor_parallel: bool = False


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the loaded model says about itself."""

    architecture: str  # config.json's first `architectures` entry, e.g. Qwen2ForCausalLM
    description: str
    vocab_size: int
    hidden_size: int
    max_seq_len: int  # as loaded
    cache_size: int  # as loaded (tokens)
    trained_context: int | None
    bos_text: str
    eos_text: str
    add_bos: bool
    chat_template: str | None
    stop_tokens: frozenset[int]  # end-of-generation tokens
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Sampling:
    """ExLlamaV3's sampler stages' settings for one job (see sampling.py for how requests map onto them)."""

    temperature: float = 0.8
    temperature_last: bool = True
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_range: int = 64  # past tokens the penalties look at; -1: all of them
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    logit_bias: dict[int, float] = field(default_factory=dict)
    banned_tokens: tuple[int, ...] = ()
    min_tokens: int = 0
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Constraint:
    """Constrained decoding for one job: a JSON schema, or a GBNF grammar (a forced tool call, a raw grammar)."""

    json_schema: dict[str, Any] | None = None
    gbnf: str | None = None


@dataclass(slots=True, eq=False)
class Exl3Job:
    """One sequence to generate: what the generator runs, and what the scheduler checks (stop strings, the
    token limit). `prompt` is tokenized and known to fit the context."""

    prompt: list[int]
    max_tokens: int
    sampling: Sampling
    stop_tokens: frozenset[int]  # end the job (empty: never end at an end-of-generation token)
    stop: list[str] = field(default_factory=list)  # stop strings, matched by the scheduler
    banned_strings: list[str] = field(default_factory=list)
    filter: object | None = None  # made by `Generator.make_filter` for this job alone
    thought: Thought | None = None  # the output is split into reasoning and content (see core/reasoning.py)
    id: int = field(default_factory=lambda: next(_ids))

    def discard(self) -> None:
        """Nothing to free: a filter that never ran is garbage."""


EndReason = Literal["stop_token", "max_new_tokens", "end_filter", "stop_string", "loop_detected"]


@dataclass(frozen=True, slots=True)
class Event:
    """What one `iterate` step did for one job: text sampled since the last event and, at the end, why."""

    job: Exl3Job
    text: str = ""
    tokens: int = 0  # tokens sampled since the last event
    end: EndReason | None = None
    total_tokens: int | None = None  # with `end`: all tokens the job sampled, as the generator counts them
    cached_tokens: int = 0  # with `end`: prompt tokens found in the cache


class Generator(Protocol):
    """A loaded model with its cache and its batching generator. `iterate` and `enqueue`/`cancel` are called from
    the engine thread only; `encode`, `decode` and `make_filter` from request threads too."""

    @property
    def info(self) -> ModelInfo: ...

    def encode(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """Token ids of `text`; `special`: text naming special tokens becomes them."""

    def decode(self, tokens: Sequence[int], *, special: bool) -> str:
        """The text of `tokens`; special tokens render as nothing unless `special`."""

    def make_filter(self, constraint: Constraint) -> object:
        """A constrained-decoding filter for one job. ValueError when the schema or grammar cannot be used."""

    def enqueue(self, job: Exl3Job) -> None: ...

    def cancel(self, job: Exl3Job) -> None:
        """Stop a job (its pages go back to the cache); no more events come for it."""

    def iterate(self) -> list[Event]:
        """One step of every running job (prefill or generation); jobs beyond the cache's room wait."""

    def close(self) -> None: ...


GeneratorFactory = Callable[[Exl3Config, Callable[[float], None]], Generator]
"""Loads a model folder (reporting progress from 0 to 1); raises RuntimeError, ValueError or OSError when it
cannot, with a message for the gateway."""
