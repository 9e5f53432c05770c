"""Regression tests, through the app, for what the generated requests found (tests/fuzz): integers past 64 bits
in fields that had no upper bound reached the engine hop and came back as a 500. Each is now a 400 in the
dialect's shape, before any engine is asked, and the server goes on serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import running
from tests.api.shapes import assert_dialect_error
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

HUGE = 2**1000
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("openai", "/detokenize", {"model": "alpha", "tokens": [1, HUGE]}),
    ("openai", "/v1/completions", {"model": "alpha", "prompt": [1, HUGE]}),
    (
        "anthropic",
        "/v1/messages",
        {"model": "alpha", "max_tokens": HUGE, "messages": [{"role": "user", "content": "x"}]},
    ),
    ("ollama", "/api/generate", {"model": "alpha", "prompt": "x", "options": {"num_ctx": HUGE}}),
    ("kobold", "/api/extra/detokenize", {"model": "alpha", "ids": [HUGE]}),
]


@pytest.mark.parametrize(("dialect", "path", "body"), CASES, ids=[c[1] for c in CASES])
async def test_a_huge_integer_is_a_400_before_the_engine(
    tmp_path: Path, farm: FakeFarm, dialect: str, path: str, body: dict[str, Any]
) -> None:
    async with running(tmp_path, farm) as (_, client):
        reply = await client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        assert_dialect_error(reply, dialect, 400)
        assert farm.starts == 0
        assert (await client.get("/v1/models")).status_code == 200
