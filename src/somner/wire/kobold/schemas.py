"""KoboldAI request bodies as pydantic models, with KoboldCpp's field names and meanings.

Kobold front ends send a few sampler fields that Somner's engines do not have (`rep_pen_slope`, `smoothing_factor`,
`adaptive_target`, ...): unknown fields are kept aside and ignored, as the API's tolerance requires. The fields
declared here are the ones Somner honours (`sampler_order` only for where the temperature goes), and their types
and ranges are strict: a string where a number belongs, or a value out of range, is a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field

from somner.wire import sampling
from somner.wire.body import RequestBody


class GenerateRequest(RequestBody):
    """`POST /api/v1/generate` and `POST /api/extra/generate/stream`."""

    prompt: str
    max_length: sampling.Tokens | None = None
    max_context_length: sampling.Tokens | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=100.0)
    top_k: sampling.TopK | None = None
    top_a: sampling.Probability | None = None  # 0: off
    top_p: sampling.Probability | None = None
    min_p: sampling.Probability | None = None
    typical: float | None = Field(default=None, ge=0.0, le=1.0)  # 0 or 1: off (llama.cpp's typical_p)
    tfs: sampling.Probability | None = None  # 1: off
    nsigma: sampling.Sigma | None = None  # top-n-sigma; <= 0: off
    rep_pen: sampling.RepeatPenalty | None = Field(
        default=None, validation_alias=AliasChoices("rep_pen", "repetition_penalty", "repeat_penalty")
    )
    rep_pen_range: sampling.Window | None = None
    presence_penalty: sampling.Penalty | None = None
    mirostat: sampling.Mirostat | None = None
    mirostat_tau: sampling.MirostatTau | None = None
    mirostat_eta: sampling.MirostatEta | None = None
    dynatemp_range: sampling.TemperatureRange | None = None
    dynatemp_exponent: sampling.Exponent | None = None
    dry_multiplier: sampling.DryMultiplier | None = None
    dry_base: sampling.DryBase | None = None
    dry_allowed_length: sampling.AllowedLength | None = None
    dry_penalty_last_n: sampling.Window | None = None  # KoboldCpp: <= 0 the whole context
    dry_sequence_breakers: sampling.Breakers | None = None
    xtc_threshold: sampling.Probability | None = None
    xtc_probability: sampling.Probability | None = None
    # KoboldCpp's sampler ids (0 top-k, 1 top-a, 2 top-p, 3 tfs, 4 typical, 5 temperature, 6 penalties): only
    # whether the temperature comes after the others is used.
    sampler_order: Annotated[list[Annotated[int, Field(ge=0, le=6)]], Field(max_length=16)] | None = None
    stop_sequence: Annotated[list[str], Field(max_length=32)] | None = None
    trim_stop: bool | None = None
    sampler_seed: int | None = Field(default=None, ge=-1, le=2**64 - 1)  # -1: a random seed
    grammar: str | None = None  # GBNF; "" means none
    ban_eos_token: bool | None = Field(
        default=None, validation_alias=AliasChoices("ban_eos_token", "use_default_badwordsids")
    )
    logit_bias: dict[str, float] | None = None  # token id (as text) -> bias
    # Phrases the output must not contain (KoboldCpp: case-insensitive, "anti-slop"), and token ids as text.
    banned_tokens: sampling.BannedStrings | None = Field(
        default=None, validation_alias=AliasChoices("banned_tokens", "banned_strings")
    )
    custom_token_bans: str | None = Field(default=None, max_length=1_000_000)
    logprobs: bool | None = None
    memory: str | None = None  # kept at the start of the prompt when the prompt is cut to fit the context
    genkey: str | None = Field(default=None, max_length=200)
    # Extension: the model to use (default: the server's model, as KoboldCpp serves only one).
    model: str | None = Field(default=None, min_length=1)


class TokenCountRequest(RequestBody):
    """`POST /api/extra/tokencount` and `POST /api/extra/tokenize` (the same, as in KoboldCpp)."""

    prompt: str
    special: bool = True  # count the tokens the engine adds (BOS), as KoboldCpp does by default
    model: str | None = Field(default=None, min_length=1)  # extension, as in GenerateRequest


class GenkeyRequest(RequestBody):
    """`POST /api/extra/abort` and `POST /api/extra/generate/check`: which of the caller's generations."""

    genkey: str | None = Field(default=None, max_length=200)


class DetokenizeRequest(RequestBody):
    """`POST /api/extra/detokenize`; `special`: render special tokens as text (KoboldCpp's default)."""

    ids: list[sampling.TokenId] = Field(default_factory=list)
    special: bool = True
    model: str | None = Field(default=None, min_length=1)  # extension, as in GenerateRequest
