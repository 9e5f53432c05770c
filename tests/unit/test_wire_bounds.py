"""Regression tests for what the generated requests found (tests/fuzz): an integer past 64 bits in a field with
no upper bound passed validation, and the engine hop (orjson, llama.cpp's int32 token ids) failed on it with a 500.
Every such field now has a range, so the request is a 400 naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from somner.errors import BadRequest
from somner.wire.anthropic import schemas as anthropic
from somner.wire.body import parse
from somner.wire.kobold import schemas as kobold
from somner.wire.ollama import schemas as ollama
from somner.wire.openai import schemas as openai
from somner.wire.openai.responses import schemas as responses

_CHAT = [{"role": "user", "content": "hi"}]
HUGE = 2**70


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body)  # (orjson refuses integers past 64 bits; clients' encoders do not)


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        # found by the openai generator (extreme_value, seed 19): /detokenize with a 1,000-bit token id was a 500
        (openai.DetokenizeRequest, {"tokens": [1, 2**1000]}, "tokens.1"),
        (openai.DetokenizeRequest, {"tokens": [2**31]}, "tokens.0"),
        (openai.CompletionRequest, {"model": "m", "prompt": [1, HUGE]}, "prompt"),
        (openai.CompletionRequest, {"model": "m", "prompt": [[HUGE]]}, "prompt"),
        (openai.EmbeddingRequest, {"model": "m", "input": "x", "dimensions": HUGE}, "dimensions"),
        (anthropic.MessageCreateRequest, {"model": "m", "messages": _CHAT, "max_tokens": HUGE}, "max_tokens"),
        (anthropic.MessageCreateRequest, {"model": "m", "messages": _CHAT, "max_tokens": 1, "top_k": HUGE}, "top_k"),
        (
            anthropic.MessageCreateRequest,
            {"model": "m", "messages": _CHAT, "max_tokens": 1, "thinking": {"type": "enabled", "budget_tokens": HUGE}},
            "thinking.budget_tokens",
        ),
        (ollama.GenerateRequest, {"model": "m", "prompt": "x", "context": [HUGE]}, "context.0"),
        (ollama.GenerateRequest, {"model": "m", "prompt": "x", "options": {"num_ctx": HUGE}}, "options.num_ctx"),
        (ollama.GenerateRequest, {"model": "m", "prompt": "x", "options": {"num_batch": -HUGE}}, "options.num_batch"),
        (ollama.EmbedRequest, {"model": "m", "input": "x", "dimensions": HUGE}, "dimensions"),
        (kobold.DetokenizeRequest, {"ids": [HUGE]}, "ids.0"),
        (responses.ResponseRequest, {"model": "m", "input": "x", "max_output_tokens": HUGE}, "max_output_tokens"),
        (responses.ResponseRequest, {"model": "m", "input": "x", "top_k": HUGE}, "top_k"),
    ],
)
def test_integers_past_their_range_are_a_400_naming_the_field(
    model: type[BaseModel], body: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(model, _json(body))
    assert caught.value.status == 400
    assert caught.value.param is not None and caught.value.param.startswith(param), caught.value.param


def test_the_largest_allowed_values_still_parse() -> None:
    parse(openai.DetokenizeRequest, _json({"tokens": [0, 2**31 - 1]}))
    parse(anthropic.MessageCreateRequest, _json({"model": "m", "messages": _CHAT, "max_tokens": 2**31 - 1}))
    parse(ollama.GenerateRequest, _json({"model": "m", "prompt": "x", "options": {"num_gpu": -1, "num_ctx": 8192}}))
