"""Speculative decoding: a small draft model guesses the next tokens of each generating sequence, and the model
checks all of them in the one decode it was going to run anyway.

Design note. The draft model has its own context with the same slots and per-slot context as the model's. Its
cache follows each slot's accepted tokens (`cached[seq]` is always a prefix of what the slot holds); what it lacks
(a new prompt, the last guess accepted) it catches up on, in the first of its decodes, under a token budget. Each
step it proposes up to `max_tokens` tokens per slot, greedily, one batched decode per proposed token.

The scheduler then puts `[last token, guess 1, ..., guess k]` of the slot in the model's batch, all with logits,
and samples row by row with the request's own sampler chain: a sampled token that equals the next guess is
accepted and the next row is sampled; the first that differs (or the token after the last guess) ends the step.
Every token a client gets is drawn from the model's own distribution, with the request's sampler, penalties
and grammar, so the output is what it would be without a draft model; the draft only decides how many tokens
a step yields. Rejected positions are then dropped from both caches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from somner.engine.llama import Batch, EngineError, LlamaContext, LlamaModel, common_prefix

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Wish:
    """A slot that would like guesses: its accepted tokens, the token it feeds next, and how many guesses fit."""

    seq: int
    tokens: list[int]
    last_token: int
    limit: int
    guesses: list[int] = field(default_factory=list)


class Drafter:
    def __init__(self, model: LlamaModel, ctx: LlamaContext, *, max_tokens: int, budget: int) -> None:
        self.model = model
        self.ctx = ctx
        self.max_tokens = max_tokens
        self.budget = budget  # catch-up tokens per step, all slots together
        self.cached: list[list[int]] = [[] for _ in range(ctx.shape.n_seq_max)]
        self._batch = Batch(max(budget, ctx.shape.n_seq_max) + ctx.shape.n_seq_max)

    def close(self) -> None:
        self._batch.close()
        self.ctx.close()
        self.model.close()

    def keep(self, seq: int, tokens: list[int]) -> None:
        """The slot now holds `tokens` (a new prompt's reused part): keep the longest cached prefix of them."""
        self.truncate(seq, common_prefix(self.cached[seq], tokens))

    def truncate(self, seq: int, n: int) -> None:
        """Keep at most the first `n` cached tokens of `seq` (known to agree with the slot's)."""
        cached = self.cached[seq]
        if len(cached) > n:
            del cached[self.ctx.keep_prefix(seq, n) :]

    def propose(self, wishes: list[Wish]) -> None:
        """Fill each wish's `guesses` (possibly none: a slot still catching up gets none this step)."""
        batch = self._batch
        batch.clear()
        budget = self.budget
        rows: list[tuple[Wish, int]] = []
        for wish in wishes:
            cached = self.cached[wish.seq]
            pending = [*wish.tokens[len(cached) :], wish.last_token]
            if len(pending) > budget:
                # Too much to catch up on now: feed a part (no guesses this step), the rest in later steps.
                take = budget
                if take > 0 and len(pending) - 1 > 0:
                    take = min(take, len(pending) - 1)
                    batch.add_run(pending[:take], len(cached), wish.seq, False)
                    cached.extend(pending[:take])
                    budget -= take
                continue
            rows.append((wish, batch.add_run(pending, len(cached), wish.seq, True)))
            cached.extend(pending)
            budget -= len(pending)
        if batch.size == 0:
            return
        try:
            self.ctx.decode(batch)
        except EngineError as exc:
            self._forget(exc, [w.seq for w in wishes])
            return
        active = [(wish, row) for wish, row in rows if wish.limit > 0]
        for wish, row in active:
            wish.guesses.append(self._best(row))
        for _ in range(1, self.max_tokens):
            active = [(wish, row) for wish, row in active if len(wish.guesses) < wish.limit]
            if not active:
                break
            batch.clear()
            fed = []
            for wish, _ in active:
                cached = self.cached[wish.seq]
                guess = wish.guesses[-1]
                fed.append((wish, batch.add(guess, len(cached), wish.seq, True)))
                cached.append(guess)
            try:
                self.ctx.decode(batch)
            except EngineError as exc:
                self._forget(exc, [w.seq for w, _ in active])
                for wish, _ in active:
                    wish.guesses.clear()
                return
            active = fed
            for wish, row in active:
                wish.guesses.append(self._best(row))

    def _best(self, row: int) -> int:
        return int(self.ctx.logits(row).argmax())

    def _forget(self, exc: EngineError, seqs: list[int]) -> None:
        log.warning("the draft model failed to decode (%s); its guesses start over", exc)
        for seq in seqs:
            self.ctx.seq_remove(seq, 0, -1)
            self.cached[seq].clear()


def check_compatible(model: LlamaModel, draft: LlamaModel) -> None:
    """A draft model must share the model's vocabulary: its guesses are the model's token ids."""
    if draft.n_vocab != model.n_vocab:
        raise EngineError(
            f"the draft model's vocabulary ({draft.n_vocab} tokens) differs from the model's ({model.n_vocab})"
        )
    probes = [t for t in (model.bos, model.eos, 100, 1000, model.n_vocab // 2, model.n_vocab - 1) if t >= 0]
    if any(model.piece(t, special=True) != draft.piece(t, special=True) for t in probes):
        raise EngineError("the draft model's vocabulary differs from the model's (same size, other tokens)")
