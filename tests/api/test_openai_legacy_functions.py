"""OpenAI's legacy function calling (`functions`, `function_call`, `function` messages) on `/v1/chat/completions`:
served as tools, answered in the legacy shape, over fake backends."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from somner.core import ChatRequest, ToolChoiceMode
from tests.api.shapes import assert_dialect_error
from tests.api.test_openai_routes import chat, sse_events
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
}
TIME = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}


def last_chat(farm: FakeFarm) -> ChatRequest:
    sent = farm.backends[0].requests[-1]
    assert isinstance(sent, ChatRequest)
    return sent


async def test_named_function_call_answers_in_the_legacy_shape(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    body = chat("Oslo please", functions=[WEATHER, TIME], function_call={"name": "get_weather"})
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    message = choice["message"]
    assert message["content"] is None and "tool_calls" not in message
    assert message["function_call"] == {"name": "get_weather", "arguments": '{"word": "Oslo"}'}
    sent = last_chat(farm)
    assert [t.name for t in sent.tools] == ["get_weather", "get_time"]
    assert sent.tools[0].description == "Weather in a city" and sent.tools[0].parameters == WEATHER["parameters"]
    assert sent.tool_choice.mode is ToolChoiceMode.FUNCTION and sent.tool_choice.name == "get_weather"
    assert sent.parallel_tool_calls is False  # a legacy answer holds one call


async def test_streamed_legacy_call_comes_as_function_call_deltas(client: httpx.AsyncClient) -> None:
    body = chat("Now", functions=[WEATHER, TIME], function_call={"name": "get_time"}, stream=True)
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = [e for e in sse_events(response.content) if isinstance(e, dict) and e["choices"]]
    deltas = [e["choices"][0]["delta"] for e in events]
    assert not any("tool_calls" in d for d in deltas)
    pieces = [d["function_call"] for d in deltas if "function_call" in d]
    assert pieces[0]["name"] == "get_time" and all("name" not in p for p in pieces[1:])
    assert "".join(p["arguments"] for p in pieces) == '{"word": "Now"}'
    assert events[-1]["choices"][0]["finish_reason"] == "function_call"


@pytest.mark.parametrize("function_call", ["auto", None])
async def test_auto_and_none(client: httpx.AsyncClient, farm: FakeFarm, function_call: str | None) -> None:
    extra: dict[str, Any] = {"functions": [WEATHER]}
    if function_call is not None:
        extra["function_call"] = function_call
    response = await client.post("/v1/chat/completions", json=chat("plain words", **extra))
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == "plain words"
    assert last_chat(farm).tool_choice.mode is ToolChoiceMode.AUTO
    await client.post("/v1/chat/completions", json=chat("x", functions=[WEATHER], function_call="none"))
    assert last_chat(farm).tool_choice.mode is ToolChoiceMode.NONE


async def test_a_legacy_history_becomes_tool_calls_and_results(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"word": "x"}'}},
        {"role": "function", "name": "get_weather", "content": "three degrees"},
    ]
    response = await client.post(
        "/v1/chat/completions", json={"model": "alpha", "messages": messages, "functions": [WEATHER]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "three degrees"
    sent = last_chat(farm).messages
    [call] = sent[1].tool_calls
    assert (call.name, call.arguments) == ("get_weather", '{"word": "x"}')
    assert (sent[2].role, sent[2].tool_call_id, sent[2].content) == ("tool", call.id, "three degrees")
    # the same history with today's `tools` is accepted too
    again = await client.post("/v1/chat/completions", json={"model": "alpha", "messages": messages})
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"functions": [WEATHER], "tools": [{"type": "function", "function": WEATHER}]}, "functions"),
        ({"functions": [WEATHER], "function_call": "auto", "tool_choice": "auto"}, "function_call"),
        ({"function_call": "auto"}, "function_call"),
        ({"functions": [WEATHER], "function_call": {"name": "get_time"}}, "function_call"),
        ({"functions": [WEATHER], "function_call": "required"}, "function_call"),
        ({"functions": [WEATHER], "function_call": {"nam": "get_weather"}}, "function_call"),
        ({"functions": [WEATHER, WEATHER]}, "functions"),
        ({"functions": "get_weather"}, "functions"),
        ({"functions": [{"name": "bad name!"}]}, "functions"),
        ({"functions": [{"description": "no name"}]}, "functions"),
        ({"functions": [{"name": "f", "parameters": "object"}]}, "functions"),
    ],
)
async def test_bad_legacy_requests_are_400s(client: httpx.AsyncClient, extra: dict[str, Any], param: str) -> None:
    response = await client.post("/v1/chat/completions", json=chat("x", **extra))
    message = assert_dialect_error(response, "openai", 400)
    assert str(response.json()["error"]["param"]).startswith(param), (response.json(), message)


async def test_bad_legacy_messages_are_400s(client: httpx.AsyncClient) -> None:
    for message in (
        {"role": "function", "content": "no name"},
        {"role": "assistant", "function_call": {"name": "f"}},
        {"role": "assistant", "function_call": "f()"},
    ):
        body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}, message]}
        assert_dialect_error(await client.post("/v1/chat/completions", json=body), "openai", 400)
    unknown = {**chat("x", functions=[WEATHER]), "model": "gamma"}
    assert_dialect_error(await client.post("/v1/chat/completions", content=orjson.dumps(unknown)), "openai", 404)
