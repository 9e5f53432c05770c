"""KoboldAI wire → core: a generate body becomes a `KoboldGeneration` (a core completion request plus what only
Kobold has: the memory, the context the client allows, whether stop strings are trimmed, the genkey)."""

from __future__ import annotations

from dataclasses import dataclass

from somner.core import CompletionRequest, SamplingParams
from somner.errors import BadRequest
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


def sampling(req: schemas.GenerateRequest) -> SamplingParams:
    """Kobold's sampler fields under their core names. KoboldCpp's "off" values (`sampler_seed` -1, `typical` 0,
    an empty `grammar`) mean unset, so the engine's and the model's defaults apply."""
    return SamplingParams(
        max_tokens=req.max_length,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        typical_p=req.typical if req.typical else None,
        presence_penalty=req.presence_penalty,
        repeat_penalty=req.rep_pen,
        repeat_last_n=req.rep_pen_range,
        seed=req.sampler_seed if req.sampler_seed is not None and req.sampler_seed >= 0 else None,
        stop=[s for s in req.stop_sequence or [] if s],
        logit_bias=_logit_bias(req.logit_bias),
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
    )


def genkey_request(raw: bytes) -> schemas.GenkeyRequest:
    """An abort or check body. Front ends often send none at all (KoboldCpp accepts that): an empty body is `{}`."""
    return parse(schemas.GenkeyRequest, raw if raw.strip() else b"{}")
