"""Tool calling on `/v1/chat/completions` and the tokenizer routes, over fake backends."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.api.shapes import assert_dialect_error
from tests.api.test_gateway import as_key, make_key
from tests.api.test_openai_routes import chat, sse_events

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


async def test_required_tool_choice_returns_the_call(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json=chat("Oslo please", tools=[WEATHER, TIME], tool_choice="required")
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"] is None
    [call] = message["tool_calls"]
    assert call["id"] == "call_fake0" and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"word": "Oslo"}'}


async def test_named_tool_choice_streams_tool_call_deltas(client: httpx.AsyncClient) -> None:
    body = chat(
        "Now", tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}}, stream=True
    )
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if isinstance(e, dict) and e["choices"]]
    pieces = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    assert pieces[0]["index"] == 0 and pieces[0]["id"] == "call_fake0" and pieces[0]["type"] == "function"
    assert pieces[0]["function"]["name"] == "get_time"
    assert "".join(p["function"]["arguments"] for p in pieces) == '{"word": "Now"}'
    assert all("id" not in p for p in pieces[1:])
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-1] if isinstance(e, dict) and e["choices"]]
    assert finishes[-1] == "tool_calls"


async def test_a_conversation_with_earlier_calls_and_results_is_accepted(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"word": "x"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "three degrees"},
    ]
    response = await client.post(
        "/v1/chat/completions", json={"model": "alpha", "messages": messages, "tools": [WEATHER], "tool_choice": "auto"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "three degrees"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": "get_weather"}, "tools"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools"),
        ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)
async def test_bad_tools_are_refused_in_openai_shape(
    client: httpx.AsyncClient, extra: dict[str, object], param: str
) -> None:
    response = await client.post("/v1/chat/completions", json=chat("hi", **extra))
    assert_dialect_error(response, "openai", 400)
    error = response.json()["error"]
    assert str(error["param"]).startswith(param), error


async def test_a_tool_message_needs_its_call_id(client: httpx.AsyncClient) -> None:
    body = {"model": "alpha", "messages": [{"role": "tool", "content": "result"}]}
    assert_dialect_error(await client.post("/v1/chat/completions", json=body), "openai", 400)


async def test_tokenize_and_detokenize(client: httpx.AsyncClient) -> None:
    response = await client.post("/tokenize", json={"content": "one three seven", "model": "alpha"})
    assert response.status_code == 200, response.text
    assert response.json() == {"tokens": [3, 5, 5]}
    pieces = (
        await client.post("/tokenize", json={"content": "one three", "with_pieces": True, "model": "alpha"})
    ).json()
    assert pieces == {"tokens": [{"id": 3, "piece": "one"}, {"id": 5, "piece": "three"}]}
    assert (await client.post("/detokenize", json={"tokens": [2, 3], "model": "beta"})).json() == {"content": "xx xxx"}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/tokenize", {"model": "alpha"}, 400),
        ("/tokenize", {"content": 5, "model": "alpha"}, 400),
        ("/tokenize", {"content": "a", "model": "gamma"}, 404),
        ("/detokenize", {"tokens": "1 2", "model": "alpha"}, 400),
        ("/detokenize", {"tokens": [1, "x"], "model": "alpha"}, 400),
        ("/detokenize", {"tokens": [1], "model": "gamma"}, 404),
    ],
)
async def test_tokenizer_bad_inputs(client: httpx.AsyncClient, path: str, body: dict[str, object], status: int) -> None:
    assert_dialect_error(await client.post(path, json=body), "openai", status)
    assert (await client.post("/tokenize", json={"content": "still serving", "model": "alpha"})).status_code == 200


async def test_tokenizer_routes_need_a_key_and_count_against_its_limit(client: httpx.AsyncClient) -> None:
    anonymous = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    async with anonymous:
        assert_dialect_error(await anonymous.post("/tokenize", json={"content": "a", "model": "alpha"}), "openai", 401)
        wrong = {"authorization": "Bearer sk-somner-wrong"}
        assert_dialect_error(
            await anonymous.post("/detokenize", json={"tokens": [1], "model": "alpha"}, headers=wrong), "openai", 401
        )
    key = await make_key(client, rpm=1)
    assert (
        await client.post("/tokenize", json={"content": "a", "model": "alpha"}, headers=as_key(key))
    ).status_code == 200
    limited = await client.post("/tokenize", json={"content": "a", "model": "alpha"}, headers=as_key(key))
    assert_dialect_error(limited, "openai", 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert orjson.loads(limited.content)["error"]["type"]
