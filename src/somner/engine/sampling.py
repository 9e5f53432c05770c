"""Per-sequence sampling with llama.cpp's sampler chain, and log-probabilities from raw logits.

Chain order (llama-server's): grammar, logit bias, penalties, DRY, top-n-sigma, top-k, typical-p, top-p, min-p,
XTC, temperature (dynamic when `dynatemp_range` > 0), then a seeded draw. `temperature_last: false` moves the
temperature in front of the truncation samplers (after penalties and DRY); Mirostat (1 or 2) replaces the
truncation samplers and the draw, after the temperature, as in llama-server. At temperature 0 the chain ends in a
greedy pick instead, and without a grammar, penalties or DRY no chain is needed at all: an argmax.

What llama.cpp has no sampler for is done here, on a candidate array the sampler builds itself instead of
letting llama.cpp copy the logits (`llama_sampler_sample` does no more than that): tokens that may not be
sampled (banned, outside `allowed_tokens`, an end of generation before `min_tokens`, a token the scheduler banned
at this position because it began a banned string) are left out of it, and KoboldAI's top-a and tail-free
sampling cut it before the chain sees it. The logits themselves are never changed, so log-probabilities are
always the model's own. Values left unset by the request get llama-server's defaults.
"""

from __future__ import annotations

import ctypes
import math
import secrets
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as lib
import numpy as np
import numpy.typing as npt

from somner.core import SamplingParams
from somner.engine.llama import LlamaContext, LlamaModel
from somner.errors import BadRequest

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data, field for field
_TFS_CANDIDATES = 3000  # tail-free sampling looks at the most likely tokens only, as KoboldCpp does
_MIROSTAT_M = 100  # Mirostat 1's sample of tokens for its Zipf estimate (llama.cpp and KoboldCpp use 100)


class NoCandidates(Exception):
    """Every token is excluded at this position (the request's token lists and the scheduler's bans together)."""


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
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    top_n_sigma: float = -1.0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_range: int = -1
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", '"', "*")
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    top_a: float = 0.0
    tfs: float = 1.0


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _window(last_n: int, context_size: int) -> int:
    """A history window as llama.cpp's samplers take it: -1 (the whole context) resolved, since llama.cpp turns a
    negative window into an empty (disabled) sampler."""
    return context_size if last_n < 0 else last_n


def _check_tokens(model: LlamaModel, tokens: Collection[int], param: str) -> None:
    bad = next((t for t in tokens if not model.valid_token(t)), None)
    if bad is not None:
        raise BadRequest(f"'{param}' names token {bad}, outside the vocabulary (0..{model.n_vocab - 1})", param=param)


class Sampler:
    """Owns one llama.cpp sampler chain. Not thread-safe: used by the engine thread only."""

    def __init__(
        self,
        model: LlamaModel,
        params: SamplingParams,
        *,
        grammar: str | None = None,
        prompt_tokens: list[int] | None = None,
        context_size: int | None = None,
        defaults: SamplingDefaults | None = None,
    ) -> None:
        d = defaults or SamplingDefaults()
        self.plain_greedy = False
        self.constrained = grammar is not None  # a grammar decides what may come next
        self._prompt = list(prompt_tokens or [])
        self._context_size = context_size or model.n_ctx_train or 4096
        self._bias_ids = np.zeros(0, dtype=np.int64)
        self._bias_values = np.zeros(0, dtype=np.float32)
        # Stages whose state is the history they accepted, to rebuild after a rewind: (stage, window, sees the
        # prompt); window 0 means all of it.
        self._history: list[tuple[Any, int, bool]] = []
        self._candidates = _Candidates(model, params, d)
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        # Freed by close(); the finalizer is a safety net for a sampler whose job never ran.
        self._finalizer = weakref.finalize(self, lib.llama_sampler_free, self.chain)
        try:
            self._build(model, params, d, grammar)
        except BaseException:
            self.close()
            raise
        self._argmax_only = self.plain_greedy and not self._bias_ids.size and not self._candidates.ever_needed

    def _build(self, model: LlamaModel, params: SamplingParams, d: SamplingDefaults, grammar: str | None) -> None:
        if grammar is not None:
            stage = lib.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
            if not stage:
                raise BadRequest("The grammar could not be parsed", param="grammar", code="invalid_grammar")
            self._add(stage)
            self._history.append((stage, 0, False))  # a grammar follows the output only
        bias = dict(params.logit_bias)
        _check_tokens(model, bias, "logit_bias")
        if params.ignore_eos:
            bias.update(dict.fromkeys(model.eog_tokens, -math.inf))
        if bias:
            entries = (lib.llama_logit_bias * len(bias))()
            for i, (token, value) in enumerate(bias.items()):
                entries[i] = lib.llama_logit_bias(token, value)
            self._add(lib.llama_sampler_init_logit_bias(model.n_vocab, len(entries), entries))
        penalized = self._penalties(model, params, d)
        penalized = self._dry(model, params, d) or penalized
        temperature = _or(params.temperature, d.temperature)
        if temperature <= 0.0:
            self._candidates.greedy()
            self._add(lib.llama_sampler_init_greedy())
            # Greedy without a grammar, penalties or DRY needs no chain: an argmax over the logits (plus any biases)
            # is ~10x cheaper than llama.cpp's sampler, which first copies the whole vocabulary (262k entries
            # for Gemma) into a candidate array.
            if grammar is None and not penalized:
                self.plain_greedy = True
                self._bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
                self._bias_values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
            return
        seed = (params.seed if params.seed is not None else secrets.randbits(32)) & 0xFFFFFFFF
        temperature_stage = self._temperature(params, d, temperature)
        mirostat = int(_or(params.mirostat, d.mirostat))
        if params.temperature_last is False or mirostat:
            self._add(temperature_stage())
        if mirostat == 1:
            tau, eta = _or(params.mirostat_tau, d.mirostat_tau), _or(params.mirostat_eta, d.mirostat_eta)
            self._add(lib.llama_sampler_init_mirostat(model.n_vocab, seed, tau, eta, _MIROSTAT_M))
            return
        if mirostat == 2:
            tau, eta = _or(params.mirostat_tau, d.mirostat_tau), _or(params.mirostat_eta, d.mirostat_eta)
            self._add(lib.llama_sampler_init_mirostat_v2(seed, tau, eta))
            return
        self._truncation(params, d, seed)
        if params.temperature_last is not False:
            self._add(temperature_stage())
        self._add(lib.llama_sampler_init_dist(seed))

    def _add(self, stage: Any) -> None:
        lib.llama_sampler_chain_add(self.chain, stage)

    def _penalties(self, model: LlamaModel, params: SamplingParams, d: SamplingDefaults) -> bool:
        repeat = _or(params.repeat_penalty, d.repeat_penalty)
        presence = _or(params.presence_penalty, d.presence_penalty)
        frequency = _or(params.frequency_penalty, d.frequency_penalty)
        window = _window(int(_or(params.repeat_last_n, d.repeat_last_n)), self._context_size)
        if window == 0 or (repeat == 1.0 and presence == 0.0 and frequency == 0.0):
            return False
        stage = lib.llama_sampler_init_penalties(model.n_vocab, window, repeat, frequency, presence)
        self._with_history(stage, window)
        return True

    def _dry(self, model: LlamaModel, params: SamplingParams, d: SamplingDefaults) -> bool:
        multiplier = _or(params.dry_multiplier, d.dry_multiplier)
        window = _window(int(_or(params.dry_range, d.dry_range)), self._context_size)
        if multiplier <= 0.0 or window == 0:
            return False
        breakers = d.dry_sequence_breakers if params.dry_sequence_breakers is None else params.dry_sequence_breakers
        encoded = (ctypes.c_char_p * max(1, len(breakers)))(*(b.encode("utf-8") for b in breakers))
        base = _or(params.dry_base, d.dry_base)
        stage = lib.llama_sampler_init_dry(
            model.vocab,
            multiplier,
            base if base >= 1.0 else d.dry_base,  # (below 1 DRY would do nothing: llama-server's default then)
            int(_or(params.dry_allowed_length, d.dry_allowed_length)),
            window,
            encoded,
            len(breakers),
        )
        self._with_history(stage, window)
        return True

    def _with_history(self, stage: Any, window: int) -> None:
        """A stage that remembers tokens: the prompt counts as history (as in llama-server), not for the grammar."""
        for token in self._prompt[-window:]:
            lib.llama_sampler_accept(stage, token)
        self._add(stage)
        self._history.append((stage, window, True))

    @staticmethod
    def _temperature(params: SamplingParams, d: SamplingDefaults, temperature: float) -> Callable[[], Any]:
        spread = _or(params.dynatemp_range, d.dynatemp_range)
        exponent = _or(params.dynatemp_exponent, d.dynatemp_exponent)
        if spread > 0.0:
            return lambda: lib.llama_sampler_init_temp_ext(temperature, spread, exponent)
        return lambda: lib.llama_sampler_init_temp(temperature)

    def _truncation(self, params: SamplingParams, d: SamplingDefaults, seed: int) -> None:
        sigma = _or(params.top_n_sigma, d.top_n_sigma)
        if sigma > 0.0:
            self._add(lib.llama_sampler_init_top_n_sigma(sigma))
        top_k = int(_or(params.top_k, d.top_k))
        if top_k > 0:
            self._add(lib.llama_sampler_init_top_k(top_k))
        typical = _or(params.typical_p, d.typical_p)
        if typical < 1.0:
            self._add(lib.llama_sampler_init_typical(typical, 1))
        top_p = _or(params.top_p, d.top_p)
        if top_p < 1.0:
            self._add(lib.llama_sampler_init_top_p(top_p, 1))
        min_p = _or(params.min_p, d.min_p)
        if min_p > 0.0:
            self._add(lib.llama_sampler_init_min_p(min_p, 1))
        xtc_probability = _or(params.xtc_probability, d.xtc_probability)
        xtc_threshold = _or(params.xtc_threshold, d.xtc_threshold)
        if xtc_probability > 0.0 and xtc_threshold <= 0.5:  # (above 0.5 at most one token can be "top")
            self._add(lib.llama_sampler_init_xtc(xtc_probability, xtc_threshold, 1, seed))

    # -- sampling ----------------------------------------------------------------------------------------

    def sample(self, ctx: LlamaContext, index: int, *, generated: int = 0, banned: Collection[int] = ()) -> int:
        """Draw the next token from batch row `index` (the chain also records it as accepted). `generated`: tokens
        generated before this one; `banned`: tokens not to be drawn here (the scheduler's rewinds)."""
        logits = ctx.logits(index)
        if self._argmax_only and not banned:  # (the common greedy request: nothing else to look at)
            return int(logits.argmax())
        candidates = self._candidates
        edits = candidates.needed(generated) or bool(banned)
        if self.plain_greedy:
            if self._bias_ids.size or edits:
                logits = logits.copy()
                logits[self._bias_ids] += self._bias_values
                if edits:
                    logits[candidates.blocked(generated, banned)] = -np.inf
            return int(logits.argmax())  # the same choice as llama.cpp's greedy: the first maximum
        if not edits:
            return int(lib.llama_sampler_sample(self.chain, ctx.handle, index))
        ids, values = candidates.build(logits, generated, banned)
        return self._apply(ids, values)

    def _apply(self, ids: npt.NDArray[np.int32], values: npt.NDArray[np.float32]) -> int:
        """What `llama_sampler_sample` does, on our own candidates: apply the chain, then accept its choice."""
        data = np.empty(ids.shape[0], dtype=_TOKEN_DATA)
        data["id"] = ids
        data["logit"] = values
        data["p"] = 0.0
        array = lib.llama_token_data_array(data.ctypes.data_as(lib.llama_token_data_p), data.shape[0], -1, False)
        lib.llama_sampler_apply(self.chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise RuntimeError("the sampler chain selected no token")
        token = int(array.data[array.selected].id)  # (stages may point `data` at a buffer of their own)
        lib.llama_sampler_accept(self.chain, token)
        return token

    def accept(self, token: int) -> None:
        """Record a token chosen without sampling (a forced one): the stages that remember tokens see it."""
        if not self._argmax_only:
            lib.llama_sampler_accept(self.chain, token)

    def rewind(self, kept: Sequence[int]) -> None:
        """The sequence went back to the prompt followed by `kept` (see the scheduler's banned strings): the stages
        that remember tokens (penalties, DRY, the grammar) start over from that history. Random states (the draw,
        XTC) and Mirostat's running estimate go on as they are."""
        for stage, window, sees_prompt in self._history:
            lib.llama_sampler_reset(stage)
            history = [*self._prompt, *kept] if sees_prompt else list(kept)
            for token in history[-window:] if window else history:
                lib.llama_sampler_accept(stage, token)

    def close(self) -> None:
        self._finalizer()  # runs llama_sampler_free at most once
        self.chain = None


class _Candidates:
    """The tokens a request may sample at a position, and KoboldAI's top-a and tail-free cuts of them: the work
    on logits that llama.cpp has no sampler for. Idle (and free) for requests that use none of it."""

    def __init__(self, model: LlamaModel, params: SamplingParams, d: SamplingDefaults) -> None:
        _check_tokens(model, params.banned_tokens, "banned_tokens")
        _check_tokens(model, params.allowed_tokens, "allowed_tokens")
        self._n_vocab = model.n_vocab
        self._static: npt.NDArray[np.bool_] | None = None  # tokens never sampled
        if params.banned_tokens or params.allowed_tokens:
            blocked = np.zeros(model.n_vocab, dtype=np.bool_)
            if params.allowed_tokens:
                blocked[:] = True
                blocked[np.asarray(params.allowed_tokens, dtype=np.int64)] = False
            blocked[np.asarray(params.banned_tokens, dtype=np.int64)] = True
            self._static = blocked
        self._min_tokens = params.min_tokens or 0
        # (the ends of generation matter only while min_tokens holds them back)
        self._eog = np.fromiter(model.eog_tokens if self._min_tokens else (), dtype=np.int64)
        if self._static is not None:
            if self._static.all():
                raise BadRequest(
                    "'allowed_tokens' leaves no token that 'banned_tokens' does not ban", param="allowed_tokens"
                )
            with_eog = self._static.copy()
            with_eog[self._eog] = True
            if with_eog.all():  # (only ends of generation are allowed: min_tokens cannot be honoured)
                self._min_tokens = 0
        self._top_a = _or(params.top_a, d.top_a)
        self._tfs = _or(params.tfs, d.tfs)
        self._cuts = self._top_a > 0.0 or self._tfs < 1.0
        self._all = np.arange(model.n_vocab, dtype=np.int32)

    def greedy(self) -> None:
        """At temperature 0 the cuts cannot change the choice: the most likely token always survives them."""
        self._cuts = False

    @property
    def ever_needed(self) -> bool:
        return self._static is not None or self._cuts or self._min_tokens > 0

    def needed(self, generated: int) -> bool:
        return self._static is not None or self._cuts or generated < self._min_tokens

    def blocked(self, generated: int, banned: Collection[int]) -> npt.NDArray[np.bool_]:
        """Which tokens may not be sampled at this position; `NoCandidates` when that is all of them."""
        mask = self._static.copy() if self._static is not None else np.zeros(self._n_vocab, dtype=np.bool_)
        if generated < self._min_tokens:
            mask[self._eog] = True
        if banned:
            mask[np.fromiter(banned, dtype=np.int64, count=len(banned))] = True
        if mask.all():
            raise NoCandidates
        return mask

    def build(
        self, logits: npt.NDArray[np.float32], generated: int, banned: Collection[int]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        keep = ~self.blocked(generated, banned)
        ids = self._all[keep]
        values = logits[keep]
        if self._top_a > 0.0 and values.shape[0] > 1:
            ids, values = top_a(ids, values, self._top_a)
        if self._tfs < 1.0 and values.shape[0] > 2:
            ids, values = tail_free(ids, values, self._tfs)
        return ids, values


def top_a(
    ids: npt.NDArray[np.int32], logits: npt.NDArray[np.float32], a: float
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """KoboldAI's top-a: keep the tokens with p >= a * p_max^2 (the most likely always).

    In logits: p_i >= a p_max^2  <=>  l_i >= ln a + 2 l_max - logsumexp(l)."""
    peak = float(logits.max())
    log_total = peak + float(np.log(np.exp(logits.astype(np.float64) - peak).sum()))
    keep = logits >= math.log(a) + 2.0 * peak - log_total
    keep[int(logits.argmax())] = True
    return ids[keep], logits[keep]


def tail_free(
    ids: npt.NDArray[np.int32], logits: npt.NDArray[np.float32], z: float
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Tail-free sampling (as llama.cpp had it until 2024, and KoboldCpp has it), over the most likely
    `_TFS_CANDIDATES` tokens: the absolute second differences of the sorted probabilities, normalized, are summed
    from the top; the cut falls at the first index where the sum exceeds z (keeping that many tokens, at least 1)."""
    if logits.shape[0] > _TFS_CANDIDATES:
        best = np.argpartition(-logits, _TFS_CANDIDATES - 1)[:_TFS_CANDIDATES]
        ids, logits = ids[best], logits[best]
    order = np.argsort(-logits, kind="stable")
    ids, logits = ids[order], logits[order]
    probs = np.exp(logits.astype(np.float64) - float(logits[0]))
    probs /= probs.sum()
    second = np.abs(np.diff(probs, n=2))
    total = float(second.sum())
    weights = second / total if total > 1e-6 else np.full(second.shape[0], 1.0 / second.shape[0])
    over = np.flatnonzero(np.cumsum(weights) > z)
    size = max(1, int(over[0])) if over.size else logits.shape[0]
    return ids[:size], logits[:size]


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
