"""KoboldAI wire → core: a generate body becomes a `KoboldGeneration` (a core completion request plus what only
Kobold has: the memory, the context the client allows, whether stop strings are trimmed, the genkey)."""

from __future__ import annotations

from dataclasses import dataclass

from somner.core import CompletionRequest, SamplingParams
from somner.errors import BadRequest
from somner.wire import sampling as wire_sampling
from somner.wire.body import parse, validation_error
from somner.wire.kobold import schemas

__all__ = ["KoboldGeneration", "generation", "genkey_request", "parse", "validation_error"]


@dataclass(slots=True)
class KoboldGeneration:
    """One Kobold generation. `core.prompt` is the memory followed by the prompt, until the route fits them into
    the context; `max_context_length` is the client's limit, None when it sent none."""

    core: CompletionRequest
    memory: str
    prompt: str
    max_context_length: int | None
    trim_stop: bool
    genkey: str
    logprobs: bool = False  # the answer carries the log-probabilities (not streamed ones, as in KoboldCpp)


def _logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in (raw or {}).items():
        try:
            bias[int(key)] = value
        except ValueError:
            raise BadRequest(
                f"Invalid value for 'logit_bias': key {key!r} is not a token id.", param="logit_bias"
            ) from None
    return bias


KOBOLD_LOGPROBS = 5
"""Alternatives per token with `logprobs: true`. KoboldCpp gives up to 10 (`logprobs_max`); Somner gives 5, the most
its engines' OpenAI hop carries for a completion (OpenAI's limit on `logprobs`)."""

_TEMPERATURE = 5  # KoboldCpp's sampler_order id of the temperature


def _temperature_last(order: list[int] | None) -> bool | None:
    """Whether KoboldCpp's `sampler_order` puts the temperature after the truncation samplers (its default), or
    before (HF's "temperature first"); None without an order that names it. llama.cpp's chain has the two places
    only: a temperature between truncation samplers counts as first."""
    if not order or _TEMPERATURE not in order:
        return None
    at = order.index(_TEMPERATURE)
    return all(order.index(i) < at for i in (0, 1, 2, 3, 4) if i in order)


def sampling(req: schemas.GenerateRequest) -> SamplingParams:
    """Kobold's sampler fields under their core names. KoboldCpp's "off" values (`sampler_seed` -1, `typical` 0,
    an empty `grammar`) mean unset, so the engine's and the model's defaults apply. KoboldCpp's DRY window of 0
    (or less) is the whole context (llama.cpp's -1)."""
    dry_range = req.dry_penalty_last_n
    return SamplingParams(
        max_tokens=req.max_length,
        temperature=req.temperature,
        temperature_last=_temperature_last(req.sampler_order),
        dynatemp_range=req.dynatemp_range,
        dynatemp_exponent=req.dynatemp_exponent,
        top_p=req.top_p,
        top_k=0 if req.top_k == -1 else req.top_k,
        min_p=req.min_p,
        typical_p=req.typical if req.typical else None,
        top_a=req.top_a,
        tfs=req.tfs,
        top_n_sigma=req.nsigma,
        xtc_probability=req.xtc_probability,
        xtc_threshold=req.xtc_threshold,
        presence_penalty=req.presence_penalty,
        repeat_penalty=req.rep_pen,
        repeat_last_n=req.rep_pen_range,
        dry_multiplier=req.dry_multiplier,
        dry_base=req.dry_base,
        dry_allowed_length=req.dry_allowed_length,
        dry_range=-1 if dry_range is not None and dry_range <= 0 else dry_range,
        dry_sequence_breakers=wire_sampling.breakers(req.dry_sequence_breakers, "dry_sequence_breakers"),
        mirostat=req.mirostat,
        mirostat_tau=req.mirostat_tau,
        mirostat_eta=req.mirostat_eta,
        seed=req.sampler_seed if req.sampler_seed is not None and req.sampler_seed >= 0 else None,
        stop=[s for s in req.stop_sequence or [] if s],
        logit_bias=_logit_bias(req.logit_bias),
        banned_strings=wire_sampling.banned_strings(req.banned_tokens),
        banned_tokens=wire_sampling.token_ids(req.custom_token_bans, "custom_token_bans"),
        logprobs=KOBOLD_LOGPROBS if req.logprobs else None,
        grammar=req.grammar or None,
        ignore_eos=bool(req.ban_eos_token),
    )


def generation(req: schemas.GenerateRequest, model: str, *, stream: bool) -> KoboldGeneration:
    memory = req.memory or ""
    return KoboldGeneration(
        core=CompletionRequest(model=model, prompt=memory + req.prompt, sampling=sampling(req), stream=stream),
        memory=memory,
        prompt=req.prompt,
        max_context_length=req.max_context_length,
        trim_stop=req.trim_stop is not False,
        genkey=req.genkey or "",
        logprobs=bool(req.logprobs),
    )


def genkey_request(raw: bytes) -> schemas.GenkeyRequest:
    """An abort or check body. Front ends often send none at all (KoboldCpp accepts that): an empty body is `{}`."""
    return parse(schemas.GenkeyRequest, raw if raw.strip() else b"{}")
