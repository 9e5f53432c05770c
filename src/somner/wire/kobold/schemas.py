"""KoboldAI request bodies as pydantic models, with KoboldCpp's field names and meanings.

Kobold front ends send many sampler fields that Somner's engines do not have (`sampler_order`, `rep_pen_slope`,
`tfs`, `top_a`, `mirostat`, ...): unknown fields are kept aside and ignored, as the API's tolerance requires. The
fields declared here are the ones Somner honours, and their types are strict: a string where a number belongs
is a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from somner.wire.body import RequestBody


class GenerateRequest(RequestBody):
    """`POST /api/v1/generate` and `POST /api/extra/generate/stream`."""

    prompt: str
    max_length: int | None = Field(default=None, ge=1)
    max_context_length: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    typical: float | None = Field(default=None, ge=0.0, le=1.0)  # 0 or 1: off (llama.cpp's typical_p)
    rep_pen: float | None = Field(default=None, gt=0.0, le=10.0)
    rep_pen_range: int | None = Field(default=None, ge=-1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stop_sequence: Annotated[list[str], Field(max_length=32)] | None = None
    trim_stop: bool | None = None
    sampler_seed: int | None = Field(default=None, ge=-1, le=2**64 - 1)  # -1: a random seed
    grammar: str | None = None  # GBNF; "" means none
    ban_eos_token: bool | None = None
    logit_bias: dict[str, float] | None = None  # token id (as text) -> bias
    memory: str | None = None  # kept at the start of the prompt when the prompt is cut to fit the context
    genkey: str | None = Field(default=None, max_length=200)
    # Extension: the model to use (default: the server's model, as KoboldCpp serves only one).
    model: str | None = Field(default=None, min_length=1)


class TokenCountRequest(RequestBody):
    """`POST /api/extra/tokencount`."""

    prompt: str
    special: bool = True  # count the tokens the engine adds (BOS), as KoboldCpp does by default
    model: str | None = Field(default=None, min_length=1)  # extension, as in GenerateRequest


class GenkeyRequest(RequestBody):
    """`POST /api/extra/abort` and `POST /api/extra/generate/check`: which of the caller's generations."""

    genkey: str | None = Field(default=None, max_length=200)
