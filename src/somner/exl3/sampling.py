"""A request's sampling parameters as ExLlamaV3's sampler stages take them.

ExLlamaV3 has temperature (first or last), top-k, top-p, min-p, repetition, presence and frequency penalties over
a window, XTC, logit bias and banned tokens. A request that asks for a sampler it lacks (typical-p, top-a,
tail-free, top-n-sigma, DRY, Mirostat, dynamic temperature, allowed tokens) or for log-probabilities is refused
with a 400 naming them, rather than answered as if they had been applied. Values left unset get the same
defaults as the llama.cpp engine (llama-server's), so a model answers alike on either engine.
"""

from __future__ import annotations

from somner.core import SamplingParams
from somner.engine.sampling import SamplingDefaults
from somner.errors import BadRequest
from somner.exl3.generator import Sampling

_DEFAULTS = SamplingDefaults()


def _unsupported(params: SamplingParams) -> list[str]:
    """The request's samplers ExLlamaV3 lacks (each left out when set to its neutral value)."""
    asked = {
        "typical_p": params.typical_p is not None and params.typical_p < 1.0,
        "top_a": bool(params.top_a),
        "tfs": params.tfs is not None and params.tfs < 1.0,
        "top_n_sigma": params.top_n_sigma is not None and params.top_n_sigma > 0,
        "dry_multiplier": bool(params.dry_multiplier),
        "mirostat": bool(params.mirostat),
        "dynatemp_range": bool(params.dynatemp_range),
        "allowed_tokens": bool(params.allowed_tokens),
        "logprobs": params.logprobs is not None,
    }
    return [name for name, used in asked.items() if used]


def sampling_for(params: SamplingParams, vocab_size: int) -> Sampling:
    """The sampler settings of one request; BadRequest for what the engine cannot do or tokens it does not
    have."""
    unsupported = _unsupported(params)
    if unsupported:
        raise BadRequest(
            f"The exllamav3 engine does not support {', '.join(unsupported)}; leave "
            f"{'it' if len(unsupported) == 1 else 'them'} out or use a model on the llama.cpp engine.",
            param=unsupported[0],
            code="unsupported",
        )
    for name, tokens in (("logit_bias", list(params.logit_bias)), ("banned_tokens", params.banned_tokens)):
        bad = next((t for t in tokens if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise BadRequest(f"'{name}' names token {bad}, outside the vocabulary (0..{vocab_size - 1})", param=name)
    d = _DEFAULTS
    return Sampling(
        temperature=d.temperature if params.temperature is None else params.temperature,
        temperature_last=params.temperature_last is not False,
        top_k=d.top_k if params.top_k is None else params.top_k,
        top_p=d.top_p if params.top_p is None else params.top_p,
        min_p=d.min_p if params.min_p is None else params.min_p,
        repeat_penalty=d.repeat_penalty if params.repeat_penalty is None else params.repeat_penalty,
        presence_penalty=d.presence_penalty if params.presence_penalty is None else params.presence_penalty,
        frequency_penalty=d.frequency_penalty if params.frequency_penalty is None else params.frequency_penalty,
        penalty_range=d.repeat_last_n if params.repeat_last_n is None else params.repeat_last_n,
        xtc_probability=d.xtc_probability if params.xtc_probability is None else params.xtc_probability,
        xtc_threshold=d.xtc_threshold if params.xtc_threshold is None else params.xtc_threshold,
        logit_bias=dict(params.logit_bias),
        banned_tokens=tuple(params.banned_tokens),
        min_tokens=params.min_tokens or 0,
        seed=params.seed,
    )
