"""Per-sequence sampling with llama.cpp's sampler chain, and log-probabilities from raw logits.

Chain order (llama.cpp's own): grammar, logit bias, penalties, top-k, typical-p, top-p, min-p, temperature,
then a seeded draw (or greedy at temperature 0). Values left unset by the request get llama-server's defaults.
"""

from __future__ import annotations

import math
import secrets
import weakref
from dataclasses import dataclass

import llama_cpp as lib
import numpy as np
import numpy.typing as npt

from somner.core import SamplingParams
from somner.engine.llama import LlamaContext, LlamaModel
from somner.errors import BadRequest


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


class Sampler:
    """Owns one llama.cpp sampler chain. Not thread-safe: used by the engine thread only."""

    def __init__(
        self,
        model: LlamaModel,
        params: SamplingParams,
        *,
        grammar: str | None = None,
        prompt_tokens: list[int] | None = None,
        defaults: SamplingDefaults | None = None,
    ) -> None:
        d = defaults or SamplingDefaults()
        self.plain_greedy = False
        self._bias_ids = np.zeros(0, dtype=np.int64)
        self._bias_values = np.zeros(0, dtype=np.float32)
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        # Freed by close(); the finalizer is a safety net for a sampler whose job never ran.
        self._finalizer = weakref.finalize(self, lib.llama_sampler_free, self.chain)
        try:
            self._build(model, params, d, grammar, prompt_tokens or [])
        except BaseException:
            self.close()
            raise

    def _build(
        self,
        model: LlamaModel,
        params: SamplingParams,
        d: SamplingDefaults,
        grammar: str | None,
        prompt_tokens: list[int],
    ) -> None:
        add = lib.llama_sampler_chain_add
        if grammar is not None:
            stage = lib.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
            if not stage:
                raise BadRequest("The grammar could not be parsed", param="grammar", code="invalid_grammar")
            add(self.chain, stage)
        bias = dict(params.logit_bias)
        for token in bias:
            if not model.valid_token(token):
                raise BadRequest(f"logit_bias names token {token}, outside the vocabulary", param="logit_bias")
        if params.ignore_eos:
            bias.update(dict.fromkeys(model.eog_tokens, -math.inf))
        if bias:
            entries = (lib.llama_logit_bias * len(bias))()
            for i, (token, value) in enumerate(bias.items()):
                entries[i] = lib.llama_logit_bias(token, value)
            add(self.chain, lib.llama_sampler_init_logit_bias(model.n_vocab, len(entries), entries))
        repeat = _or(params.repeat_penalty, d.repeat_penalty)
        presence = _or(params.presence_penalty, d.presence_penalty)
        frequency = _or(params.frequency_penalty, d.frequency_penalty)
        last_n = int(_or(params.repeat_last_n, d.repeat_last_n))
        penalized = last_n != 0 and (repeat != 1.0 or presence != 0.0 or frequency != 0.0)
        if penalized:
            penalties = lib.llama_sampler_init_penalties(model.n_vocab, last_n, repeat, frequency, presence)
            # The prompt counts as history for the penalties (as in llama-server), but not for the grammar.
            window = prompt_tokens if last_n < 0 else prompt_tokens[-last_n:]
            for token in window:
                lib.llama_sampler_accept(penalties, token)
            add(self.chain, penalties)
        temperature = _or(params.temperature, d.temperature)
        if temperature <= 0.0:
            add(self.chain, lib.llama_sampler_init_greedy())
            # Greedy without a grammar or penalties needs no chain: an argmax over the logits (plus any biases)
            # is ~10x cheaper than llama.cpp's sampler, which first copies the whole vocabulary (262k entries
            # for Gemma) into a candidate array.
            if grammar is None and not penalized:
                self.plain_greedy = True
                self._bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
                self._bias_values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
            return
        top_k = int(_or(params.top_k, d.top_k))
        if top_k > 0:
            add(self.chain, lib.llama_sampler_init_top_k(top_k))
        typical = _or(params.typical_p, d.typical_p)
        if typical < 1.0:
            add(self.chain, lib.llama_sampler_init_typical(typical, 1))
        top_p = _or(params.top_p, d.top_p)
        if top_p < 1.0:
            add(self.chain, lib.llama_sampler_init_top_p(top_p, 1))
        min_p = _or(params.min_p, d.min_p)
        if min_p > 0.0:
            add(self.chain, lib.llama_sampler_init_min_p(min_p, 1))
        add(self.chain, lib.llama_sampler_init_temp(temperature))
        seed = params.seed if params.seed is not None else secrets.randbits(32)
        add(self.chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: LlamaContext, index: int) -> int:
        """Draw the next token from batch row `index` (the chain also records it as accepted)."""
        if self.plain_greedy:
            logits = ctx.logits(index)
            if self._bias_ids.size:
                logits = logits.copy()
                logits[self._bias_ids] += self._bias_values
            return int(logits.argmax())  # the same choice as llama.cpp's greedy: the first maximum
        return int(lib.llama_sampler_sample(self.chain, ctx.handle, index))

    def close(self) -> None:
        self._finalizer()  # runs llama_sampler_free at most once
        self.chain = None


def logprobs_of(logits: npt.NDArray[np.float32], chosen: int, top_n: int) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of `chosen` under the model's full distribution, and the `top_n` most likely tokens."""
    peak = float(logits.max())
    shifted = logits.astype(np.float64) - peak
    log_total = float(np.log(np.exp(shifted).sum()))
    chosen_lp = float(shifted[chosen]) - log_total
    if top_n <= 0:
        return chosen_lp, []
    top_n = min(top_n, logits.shape[0])
    best = np.argpartition(-shifted, top_n - 1)[:top_n]
    best = best[np.argsort(-shifted[best], kind="stable")]
    return chosen_lp, [(int(t), float(shifted[t]) - log_total) for t in best]
