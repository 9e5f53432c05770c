"""The sampler fields every dialect shares: their ranges, and the loose forms clients send them in.

Each dialect declares the fields under its own names (OpenAI's extra body fields with llama-server's and TabbyAPI's
names, Ollama's `options`, Kobold's generate body) with the types here, so a value out of range is a 400 naming the
field in every dialect, before anything reaches an engine. Integers are bounded by what llama.cpp's 32-bit
parameters take. The helpers turn the loose forms (token ids as "1, 2, 3", DRY breakers as JSON text, a single
banned string) into the lists the core wants, with the same 400 when they do not parse.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from somner.errors import BadRequest

INT32 = 2**31 - 1

Tokens = Annotated[int, Field(ge=1, le=INT32)]
"""A number of tokens (max_tokens and its kin)."""

MinTokens = Annotated[int, Field(ge=0, le=INT32)]

TopK = Annotated[int, Field(ge=-1, le=INT32)]
"""0 (and TabbyAPI's -1): off."""

Window = Annotated[int, Field(ge=-1, le=INT32)]
"""A history window in tokens: -1 the whole context, 0 off (repeat_last_n, dry_range)."""

Probability = Annotated[float, Field(ge=0.0, le=1.0)]

Typical = Annotated[float, Field(gt=0.0, le=1.0)]

RepeatPenalty = Annotated[float, Field(gt=0.0, le=10.0)]

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
"""Presence and frequency penalties, OpenAI's range."""

TemperatureRange = Annotated[float, Field(ge=0.0, le=10.0)]
"""Dynamic temperature: the range, and TabbyAPI's min_temp and max_temp."""

Exponent = Annotated[float, Field(ge=0.0, le=100.0)]

Sigma = Annotated[float, Field(ge=-1.0, le=100.0)]
"""top_n_sigma: <= 0 off (llama-server's default is -1)."""

DryMultiplier = Annotated[float, Field(ge=0.0, le=100.0)]

DryBase = Annotated[float, Field(ge=0.0, le=100.0)]
"""Below 1 DRY would do nothing: the engine's default (1.75) is used then, as llama-server does."""

AllowedLength = Annotated[int, Field(ge=0, le=INT32)]

Mirostat = Annotated[int, Field(ge=0, le=2)]
"""0 off, 1 Mirostat, 2 Mirostat 2.0."""

MirostatTau = Annotated[float, Field(ge=0.0, le=100.0)]

MirostatEta = Annotated[float, Field(ge=0.0, le=1.0)]

TokenId = Annotated[int, Field(ge=0, le=INT32)]

MAX_TOKEN_LIST = 65_536
TokenIds = Annotated[list[TokenId], Field(max_length=MAX_TOKEN_LIST)] | str
"""Token ids, or TabbyAPI's and KoboldCpp's text form "1, 2, 3"."""

MAX_BREAKERS = 128
_Breaker = Annotated[str, Field(min_length=1, max_length=40)]  # (llama.cpp's DRY reads at most 40 characters)
Breakers = Annotated[list[_Breaker], Field(max_length=MAX_BREAKERS)] | str
"""DRY's sequence breakers, or (SillyTavern, KoboldCpp, TabbyAPI) the same list as JSON text."""

MAX_BANNED_STRINGS = 512
_BannedString = Annotated[str, Field(min_length=1, max_length=256)]
BannedStrings = Annotated[list[_BannedString], Field(max_length=MAX_BANNED_STRINGS)] | _BannedString

MAX_CHOICES = 16
"""The most choices (`n`) one request may ask for. Each choice is a sequence of its own (a slot, its prompt's
prefill, its share of every step), so `n` multiplies what one request costs; 16 covers best-of and ranking uses
while keeping one request from taking over an engine for long (choices beyond the engine's slots wait their turn)."""

_breaker_list = TypeAdapter(Annotated[list[_Breaker], Field(max_length=MAX_BREAKERS)])


def token_ids(value: list[int] | str | None, param: str) -> list[int]:
    """Token ids from a list or from text like "1, 2,3" (empty items skipped)."""
    if value is None:
        return []
    if not isinstance(value, str):
        return list(value)
    ids: list[int] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if not item.isdigit() or int(item) > INT32:
            raise BadRequest(f"Invalid value for '{param}': {item!r} is not a token id.", param=param)
        ids.append(int(item))
    if len(ids) > MAX_TOKEN_LIST:
        raise BadRequest(f"Invalid value for '{param}': at most {MAX_TOKEN_LIST} token ids.", param=param)
    return ids


def breakers(value: list[str] | str | None, param: str) -> list[str] | None:
    """DRY's sequence breakers from a list, or from JSON text: `["\\n", ":"]`, or its items alone (`"\\n", ":"`),
    as TabbyAPI reads it. None: not given (the engine's default breakers apply)."""
    if value is None or isinstance(value, list):
        return value
    text = value.strip()
    try:
        parsed = orjson.loads(text if text.startswith("[") else f"[{text}]")
        return _breaker_list.validate_python(parsed)
    except (orjson.JSONDecodeError, ValidationError):
        raise BadRequest(
            f"Invalid value for '{param}': give a list of strings (at most {MAX_BREAKERS}, 1 to 40 characters "
            "each), or that list as JSON text.",
            param=param,
        ) from None


def banned_strings(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def dynamic_temperature(
    temperature: float | None,
    dynatemp_range: float | None,
    min_temp: float | None,
    max_temp: float | None,
    *,
    names: tuple[str, str] = ("min_temp", "max_temp"),
) -> tuple[float | None, float | None]:
    """(temperature, dynatemp_range) from llama.cpp's form (a temperature and a range around it) or TabbyAPI's
    (the lowest and highest temperature, 1.0 where one is missing, as TabbyAPI defaults them): [min, max] is the
    temperature (min + max) / 2 with the range (max - min) / 2. Equal bounds mean no dynamic temperature."""
    if min_temp is None and max_temp is None:
        return temperature, dynatemp_range
    low_name, high_name = names
    if dynatemp_range is not None:
        raise BadRequest(f"Use either 'dynatemp_range' or '{low_name}'/'{high_name}', not both.", param=low_name)
    low = 1.0 if min_temp is None else min_temp
    high = 1.0 if max_temp is None else max_temp
    if low > high:
        raise BadRequest(f"Invalid value for '{low_name}': it is above '{high_name}' ({low} > {high}).", param=low_name)
    if low == high:
        return temperature, None
    return (low + high) / 2.0, (high - low) / 2.0
