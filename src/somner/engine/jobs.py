"""What the engine is asked to do, and what it reports back."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from somner.core import Chunk
from somner.core.reasoning import Thought
from somner.engine.sampling import Sampler
from somner.engine.thinking import ThinkingBudget
from somner.engine.vision import Media
from somner.errors import SomnerError

_ids = itertools.count(1)


def next_job_id() -> int:
    return next(_ids)


@dataclass(slots=True, eq=False)
class GenerationJob:
    """One sequence to generate. `prompt` is already tokenized and known to fit the context."""

    prompt: list[int]
    sampler: Sampler  # owned by the job; the engine frees it when the job ends
    max_tokens: int
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # alternatives per position; None = no logprobs
    banned: list[str] = field(default_factory=list)  # strings the output must not contain (see banned.py)
    group: int | None = None  # the choices (`n`) of one request: the same prompt, prefilled once for all
    adapters: tuple[float, ...] = ()  # the scale of each of the engine's LoRA adapters for this job
    thinking: ThinkingBudget | None = None  # a reasoning model's thinking budget (see thinking.py)
    thought: Thought | None = None  # the output is split into reasoning and content (None: not), and how
    media: tuple[Media, ...] = ()  # the prompt's images, in order (their positions hold stand-in ids: vision.py)
    id: int = field(default_factory=next_job_id)

    def discard(self) -> None:
        """Free the sampler of a job that will never be submitted."""
        self.sampler.close()


@dataclass(slots=True, eq=False)
class EmbeddingJob:
    """Inputs to embed together; `done` is called once, from the engine thread, with vectors or an error."""

    inputs: list[list[int]]
    done: Callable[[list[list[float]] | SomnerError], None]
    normalize: bool = True  # unit vectors (embeddings); False keeps the values as they are (a reranker's scores)
    id: int = field(default_factory=next_job_id)


Output = tuple[GenerationJob, Chunk | SomnerError]
"""A chunk of a job's output, or the error that ended it. A chunk with `finish_reason` ends the job."""

Sink = Callable[[list[Output]], None]
"""Receives the outputs of one scheduling step, from the engine thread. Must not block."""


@dataclass(slots=True)
class EngineStats:
    """Counters since the engine started; read by /stats and the tests (copy under the engine's lock)."""

    submitted: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    embeddings: int = 0
    active: int = 0
    queued: int = 0
    drafted_tokens: int = 0  # guesses of the draft model (speculative decoding)
    accepted_tokens: int = 0  # of which the model's own sampling confirmed
    rewinds: int = 0  # times a sequence went back to where a banned string began
    shared_prefixes: int = 0  # prompts that began from a copy of another slot's cache (a shared prefix)
    slot_moves: int = 0  # sequences moved to another slot to keep the busy ones consecutive (scheduler._compact)
    step_seconds: float = 0.0  # time spent in scheduling steps, decode included
    decode_seconds: float = 0.0  # of which inside llama_decode; the rest is per-step Python work
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, int | float]:
        with self.lock:
            return {
                "step_seconds": round(self.step_seconds, 6),
                "decode_seconds": round(self.decode_seconds, 6),
                "submitted": self.submitted,
                "finished": self.finished,
                "cancelled": self.cancelled,
                "failed": self.failed,
                "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens,
                "generated_tokens": self.generated_tokens,
                "drafted_tokens": self.drafted_tokens,
                "accepted_tokens": self.accepted_tokens,
                "rewinds": self.rewinds,
                "shared_prefixes": self.shared_prefixes,
                "slot_moves": self.slot_moves,
                "steps": self.steps,
                "embeddings": self.embeddings,
                "active": self.active,
                "queued": self.queued,
            }
