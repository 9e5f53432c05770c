"""Fitting a Kobold generation into the model's context, as KoboldCpp does.

Kobold front ends send the whole story as the prompt and the context they believe the model has
(`max_context_length`); KoboldCpp caps that at the model's context, keeps `max_length` from eating almost all of
it, and cuts the prompt from its start until prompt and output fit, keeping `memory` (and the BOS token) at the
front. Somner does the same rather than answering 400, so long chats keep working with front ends that leave
trimming to the server.

Text cannot be longer in tokens than in bytes, so most prompts are known to fit without tokenizing them; only
the others are tokenized (by the model's own tokenizer) and, when too long, sent to the engine as token ids.
"""

from __future__ import annotations

from somner.errors import ContextLengthExceeded
from somner.models.backends.base import Tokenizes
from somner.models.context import model_context
from somner.models.registry import ModelSpec
from somner.wire.kobold.decode import KoboldGeneration

__all__ = ["budget", "default_max_length", "fit", "model_context"]

DEFAULT_MAX_LENGTH = 180
"""Tokens generated when a request gives no `max_length` and the model's defaults no `max_tokens` (KoboldCpp's
default)."""

PROMPT_ROOM = 16
"""Context kept for the prompt when `max_length` would take (nearly) all of it (KoboldCpp's rule)."""


def default_max_length(spec: ModelSpec) -> int:
    defaults = spec.entry.defaults
    if defaults is not None and defaults.max_tokens is not None:
        return defaults.max_tokens
    return DEFAULT_MAX_LENGTH


def budget(job: KoboldGeneration, spec: ModelSpec) -> tuple[int, int]:
    """(context limit, max_length) for `job`: the client's `max_context_length` capped at the model's context,
    and the output limit capped so that the prompt keeps some room."""
    limit = model_context(spec)
    if job.max_context_length is not None:
        limit = min(limit, job.max_context_length)
    length = job.core.sampling.max_tokens or default_max_length(spec)
    room = max(1, min(limit - 4, PROMPT_ROOM))
    return limit, max(1, min(length, limit - room))


async def fit(job: KoboldGeneration, spec: ModelSpec, tokenizer: Tokenizes | None) -> None:
    """Set `job.core`'s prompt (memory + prompt, cut from the start of the prompt if needed) and max_tokens.
    An engine that does not tokenize gets the whole text and judges it itself."""
    limit, length = budget(job, spec)
    job.core.sampling.max_tokens = length
    job.core.prompt = job.memory + job.prompt
    if len(job.core.prompt.encode()) + 1 + length <= limit or tokenizer is None:
        return
    head = await tokenizer.tokenize(job.memory, add_special=True)  # BOS (if the model has one) and the memory
    body = await tokenizer.tokenize(job.prompt, add_special=False)
    keep = limit - length - len(head)
    if len(body) <= keep:
        return
    if keep <= 0:
        raise ContextLengthExceeded(
            f"The memory alone ({len(head)} tokens) leaves no room for the prompt within {limit} tokens of context "
            f"and max_length {length}.",
            param="memory",
        )
    job.core.prompt = [*head, *body[-keep:]]
