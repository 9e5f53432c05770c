"""Reasoning options on every dialect, over fake backends: what each dialect's fields become in the core request,
the model's configured format and budget, and bad options refused in the dialect's own error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from somner.api.serving import Call, Resuming
from somner.core import ChatRequest, Chunk, Reasoning, ReasoningFormat
from somner.errors import EngineGone
from tests.api.conftest import running
from tests.api.shapes import assert_dialect_error
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "one two three"}]


def sent(farm: FakeFarm) -> Reasoning:
    request = farm.backends[0].requests[-1]
    assert isinstance(request, ChatRequest)
    return request.reasoning


async def ask(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(path, json={"model": "alpha", **body})


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", {"messages": USER}, Reasoning()),
        ("/v1/chat/completions", {"messages": USER, "reasoning_effort": "none"}, Reasoning(enabled=False)),
        (
            "/v1/chat/completions",
            {"messages": USER, "reasoning_effort": "low"},
            Reasoning(enabled=True, budget_tokens=1024, effort="low"),
        ),
        (
            "/v1/chat/completions",
            {"messages": USER, "reasoning_effort": "high"},
            Reasoning(enabled=True, effort="high"),
        ),
        (
            "/v1/chat/completions",
            {"messages": USER, "chat_template_kwargs": {"reasoning_effort": "low"}},
            Reasoning(effort="low"),
        ),
        ("/v1/chat/completions", {"messages": USER, "reasoning_budget": 0}, Reasoning(enabled=False)),
        ("/v1/chat/completions", {"messages": USER, "thinking_budget": 50}, Reasoning(enabled=True, budget_tokens=50)),
        ("/v1/chat/completions", {"messages": USER, "reasoning_budget": -1}, Reasoning(enabled=True)),
        (
            "/v1/chat/completions",
            {"messages": USER, "chat_template_kwargs": {"enable_thinking": False}, "reasoning_format": "none"},
            Reasoning(format=ReasoningFormat.NONE, enabled=False),
        ),
        (
            "/v1/responses",
            {"input": "hi", "reasoning": {"effort": "medium"}},
            Reasoning(enabled=True, budget_tokens=4096, effort="medium"),
        ),
        ("/v1/responses", {"input": "hi", "reasoning": {"effort": "none"}}, Reasoning(enabled=False)),
        ("/api/chat", {"messages": USER, "think": True, "stream": False}, Reasoning(enabled=True)),
        ("/api/chat", {"messages": USER, "think": False, "stream": False}, Reasoning(enabled=False)),
        (
            "/api/chat",
            {"messages": USER, "think": "low", "stream": False},
            Reasoning(enabled=True, budget_tokens=1024, effort="low"),
        ),
        ("/api/generate", {"prompt": "hi", "think": True, "stream": False}, Reasoning(enabled=True)),
        ("/v1/messages", {"messages": USER, "max_tokens": 64}, Reasoning()),
        (
            "/v1/messages",
            {"messages": USER, "max_tokens": 64, "thinking": {"type": "enabled", "budget_tokens": 16}},
            Reasoning(enabled=True, budget_tokens=16),
        ),
        (
            "/v1/messages",
            {"messages": USER, "max_tokens": 64, "thinking": {"type": "disabled"}},
            Reasoning(enabled=False),
        ),
        (
            "/v1/messages",
            {"messages": USER, "max_tokens": 64, "thinking": {"type": "adaptive"}},
            Reasoning(enabled=True),
        ),
    ],
)
async def test_each_dialect_maps_its_fields(
    client: httpx.AsyncClient, farm: FakeFarm, path: str, body: dict[str, Any], expected: Reasoning
) -> None:
    response = await ask(client, path, body)
    assert response.status_code == 200, response.text
    assert sent(farm) == expected


async def test_the_models_format_and_budget_apply_where_the_request_says_nothing(
    tmp_path: Path, farm: FakeFarm
) -> None:
    models = [{"id": "alpha", "path": "alpha.gguf", "reasoning_format": "deepseek", "reasoning_budget": 32}]
    async with running(tmp_path, farm, models=models) as (_, client):
        assert (await ask(client, "/v1/chat/completions", {"messages": USER})).status_code == 200
        assert sent(farm) == Reasoning(format=ReasoningFormat.DEEPSEEK, budget_tokens=32)
        body: dict[str, Any] = {"messages": USER, "reasoning_effort": "low", "reasoning_format": "none"}
        assert (await ask(client, "/v1/chat/completions", body)).status_code == 200
        assert sent(farm) == Reasoning(
            format=ReasoningFormat.NONE, enabled=True, budget_tokens=1024, effort="low"
        )  # (the request's own win)
        body = {"messages": USER, "think": False, "stream": False}
        assert (await ask(client, "/api/chat", body)).status_code == 200
        assert sent(farm) == Reasoning(format=ReasoningFormat.DEEPSEEK, enabled=False)  # (no budget for no thinking)


async def test_a_model_budget_of_zero_turns_thinking_off_unless_asked(tmp_path: Path, farm: FakeFarm) -> None:
    models = [{"id": "alpha", "path": "alpha.gguf", "reasoning_budget": 0}]
    async with running(tmp_path, farm, models=models) as (_, client):
        assert (await ask(client, "/v1/chat/completions", {"messages": USER})).status_code == 200
        assert sent(farm) == Reasoning(enabled=False)
        body = {"messages": USER, "max_tokens": 64, "thinking": {"type": "enabled", "budget_tokens": 8}}
        assert (await ask(client, "/v1/messages", body)).status_code == 200
        assert sent(farm) == Reasoning(enabled=True, budget_tokens=8)


def test_bad_model_settings_are_refused() -> None:
    from pydantic import ValidationError

    from somner.settings import ModelEntry

    with pytest.raises(ValidationError, match="reasoning_format"):
        ModelEntry(id="m", path=Path("m.gguf"), reasoning_format="harmonyish")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="reasoning_budget"):
        ModelEntry(id="m", path=Path("m.gguf"), reasoning_budget=-1)


BAD: list[tuple[str, str, dict[str, Any], str]] = [
    ("openai", "/v1/chat/completions", {"messages": USER, "reasoning_effort": "extreme"}, "reasoning_effort"),
    ("openai", "/v1/chat/completions", {"messages": USER, "reasoning_budget": -2}, "reasoning_budget"),
    ("openai", "/v1/chat/completions", {"messages": USER, "reasoning_budget": "lots"}, "reasoning_budget"),
    ("openai", "/v1/chat/completions", {"messages": USER, "reasoning_format": "harmonyish"}, "reasoning_format"),
    (
        "openai",
        "/v1/chat/completions",
        {"messages": USER, "reasoning_effort": "low", "reasoning_budget": 5},
        "reasoning_budget",
    ),
    (
        "openai",
        "/v1/chat/completions",
        {"messages": USER, "chat_template_kwargs": {"enable_thinking": "yes"}},
        "enable_thinking",
    ),
    (
        "openai",
        "/v1/chat/completions",
        {"messages": USER, "reasoning_effort": "none", "chat_template_kwargs": {"enable_thinking": True}},
        "enable_thinking",
    ),
    (
        "openai",
        "/v1/chat/completions",
        {"messages": USER, "chat_template_kwargs": {"reasoning_effort": "{{ 7 * 7 }}"}},
        "reasoning_effort",
    ),
    ("openai", "/v1/responses", {"input": "hi", "reasoning": {"effort": "extreme"}}, "effort"),
    ("ollama", "/api/chat", {"messages": USER, "think": "extreme"}, "think"),
    ("ollama", "/api/chat", {"messages": USER, "think": 3}, "think"),
    ("ollama", "/api/generate", {"prompt": "hi", "raw": True, "think": True}, "raw"),
    ("anthropic", "/v1/messages", {"messages": USER, "max_tokens": 64, "thinking": {"type": "sometimes"}}, "type"),
    ("anthropic", "/v1/messages", {"messages": USER, "max_tokens": 64, "thinking": {"type": "enabled"}}, "budget"),
    (
        "anthropic",
        "/v1/messages",
        {"messages": USER, "max_tokens": 64, "thinking": {"type": "enabled", "budget_tokens": 0}},
        "budget_tokens",
    ),
    (
        "anthropic",
        "/v1/messages",
        {"messages": USER, "max_tokens": 64, "thinking": {"type": "enabled", "budget_tokens": 64}},
        "max_tokens",
    ),
]


@pytest.mark.parametrize(("dialect", "path", "body", "named"), BAD)
async def test_bad_options_are_400s_in_the_dialects_shape(
    client: httpx.AsyncClient, farm: FakeFarm, dialect: str, path: str, body: dict[str, Any], named: str
) -> None:
    message = assert_dialect_error(await ask(client, path, body), dialect, 400)
    assert named in message
    assert all(not backend.requests for backend in farm.backends)  # refused before any engine saw it
    after = await ask(client, "/v1/chat/completions", {"messages": USER})
    assert after.status_code == 200  # (and the server goes on serving)


async def test_a_stream_that_began_thinking_is_not_moved_to_another_engine() -> None:
    """Thinking already shown counts as output: an engine lost after it ends the stream, it is not run again."""

    class Unrecoverable:
        async def recover(self, error: EngineGone) -> None:
            raise AssertionError("a stream with output must not move to a fresh engine")

    async def thinking_then_gone() -> AsyncIterator[Chunk]:
        yield Chunk(reasoning="hm")
        raise EngineGone("the engine went away")

    async def never(backend: object) -> AsyncIterator[Chunk]:
        raise AssertionError("not reopened")

    stream = Resuming(cast(Call, Unrecoverable()), never, thinking_then_gone())
    assert (await stream.__anext__()).reasoning == "hm"
    with pytest.raises(EngineGone):
        await stream.__anext__()
