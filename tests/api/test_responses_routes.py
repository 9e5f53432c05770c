"""`POST /v1/responses` over fake backends: inputs, tools, streamed events, and every error shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from somner.services import Services
from tests.api.conftest import running
from tests.api.test_gateway import as_key, make_key
from tests.api.test_openai_routes import assert_openai_error, in_flight
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

WORD_TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up.",
    "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    "strict": True,
}


def ask(given: Any = "one two three", **extra: Any) -> dict[str, Any]:
    return {"model": "alpha", "input": given, **extra}


def events_of(body: bytes) -> list[dict[str, Any]]:
    """The SSE events, each checked to name its type both in the `event:` line and in the data."""
    out: list[dict[str, Any]] = []
    for block in body.split(b"\n\n"):
        if not block:
            continue
        kind, data = block.split(b"\n")
        assert kind.startswith(b"event: ") and data.startswith(b"data: "), block
        payload = orjson.loads(data[6:])
        assert payload["type"] == kind[7:].decode()
        out.append(payload)
    return out


def texts(output: list[dict[str, Any]]) -> list[str]:
    return [part["text"] for item in output if item["type"] == "message" for part in item["content"]]


async def test_text_input(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/responses", json=ask(metadata={"k": "v"}, store=True))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] == "completed" and body["incomplete_details"] is None and body["error"] is None
    assert body["model"] == "alpha"
    assert body["store"] is False  # nothing is kept, whatever was asked
    assert body["metadata"] == {"k": "v"}
    [item] = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert item["id"].startswith("msg_")
    assert item["content"] == [{"type": "output_text", "annotations": [], "logprobs": [], "text": "one two three"}]
    assert body["usage"] == {
        "input_tokens": 1,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 4,
    }
    assert in_flight(services)["alpha"] == 0


async def test_message_items_and_instructions(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    items = [
        {"role": "user", "content": "hello"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
        {"role": "developer", "content": "be brief"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "red "}, {"type": "input_text", "text": "green"}],
        },
    ]
    body = (await client.post("/v1/responses", json=ask(items, instructions="You are terse."))).json()
    assert texts(body["output"]) == ["red green"]
    assert body["instructions"] == "You are terse."
    sent = farm.backends[0].requests[-1]
    assert [(m.role, m.content) for m in sent.messages] == [  # type: ignore[union-attr]
        ("system", "You are terse."),
        ("user", "hello"),
        ("assistant", "hi"),
        ("developer", "be brief"),
        ("user", "red green"),
    ]


async def test_function_call_items_become_a_tool_turn(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    items = [
        {"role": "user", "content": "look up cat"},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"word":"cat"}'},
        {"type": "function_call", "call_id": "call_2", "name": "lookup", "arguments": '{"word":"dog"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "a small feline"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "a canine"}]},
    ]
    body = (await client.post("/v1/responses", json=ask(items, tools=[WORD_TOOL]))).json()
    assert texts(body["output"]) == ["a canine"]
    messages = farm.backends[0].requests[-1].messages  # type: ignore[union-attr]
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [(c.id, c.name, c.arguments) for c in messages[1].tool_calls] == [
        ("call_1", "lookup", '{"word":"cat"}'),
        ("call_2", "lookup", '{"word":"dog"}'),
    ]
    assert [(m.tool_call_id, m.name, m.content) for m in messages[2:]] == [
        ("call_1", "lookup", "a small feline"),
        ("call_2", "lookup", "a canine"),
    ]


async def test_max_output_tokens_makes_it_incomplete(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    body = (await client.post("/v1/responses", json=ask("a b c d", max_output_tokens=2, temperature=0.5))).json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert texts(body["output"]) == ["a b"]
    assert body["max_output_tokens"] == 2 and body["temperature"] == 0.5
    sampling = farm.backends[0].requests[-1].sampling
    assert sampling.max_tokens == 2 and sampling.temperature == 0.5


async def test_text_format_json_schema_reaches_the_engine(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    body = (await client.post("/v1/responses", json=ask(text={"format": fmt}))).json()
    assert body["text"] == {"format": fmt}
    sampling = farm.backends[0].requests[-1].sampling
    assert sampling.json_mode and sampling.json_schema == schema
    await client.post("/v1/responses", json=ask(text={"format": {"type": "json_object"}}))
    sampling = farm.backends[0].requests[-1].sampling
    assert sampling.json_mode and sampling.json_schema is None


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "lookup"}])
async def test_function_tool_call(client: httpx.AsyncClient, choice: object) -> None:
    other = {**WORD_TOOL, "name": "other"}
    body = (
        await client.post("/v1/responses", json=ask("cat sat", tools=[WORD_TOOL, other], tool_choice=choice))
    ).json()
    assert body["status"] == "completed"
    [call] = body["output"]
    assert call["type"] == "function_call" and call["id"].startswith("fc_") and call["status"] == "completed"
    assert call["call_id"] == "call_fake0" and call["name"] == "lookup"
    assert json.loads(call["arguments"]) == {"word": "cat"}
    assert body["tool_choice"] == choice
    assert [t["name"] for t in body["tools"]] == ["lookup", "other"]
    assert body["tools"][0]["parameters"] == WORD_TOOL["parameters"]


async def test_streamed_text(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/responses", json=ask("x y z", stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.content)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    item_id = events[2]["item"]["id"]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert all(e["item_id"] == item_id and e["output_index"] == 0 and e["content_index"] == 0 for e in deltas)
    streamed = "".join(e["delta"] for e in deltas)
    assert streamed == "x y z" == events[7]["text"] == events[8]["part"]["text"]
    final = events[-1]["response"]
    assert final["id"] == created["id"] and final["status"] == "completed"
    assert texts(final["output"]) == [streamed] and final["output"][0]["id"] == item_id
    assert final["usage"]["output_tokens"] == 3
    assert in_flight(services)["alpha"] == 0


async def test_streamed_length_is_incomplete(client: httpx.AsyncClient) -> None:
    events = events_of(
        (await client.post("/v1/responses", json=ask("a b c", stream=True, max_output_tokens=1))).content
    )
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"


async def test_streamed_function_call(client: httpx.AsyncClient) -> None:
    body = ask("cat", stream=True, tools=[WORD_TOOL], tool_choice="required")
    events = events_of((await client.post("/v1/responses", json=body)).content)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["name"] == "lookup" and added["status"] == "in_progress"
    arguments = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"word": "cat"} and events[5]["arguments"] == arguments
    [call] = events[-1]["response"]["output"]
    assert call["id"] == added["id"] and call["arguments"] == arguments and call["status"] == "completed"


async def test_failure_mid_stream_ends_with_response_failed(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/responses", json=ask("a b FAIL_MIDWAY d", stream=True))
    assert response.status_code == 200
    events = events_of(response.content)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"] == "server_error"
    assert texts(last["response"]["output"]) == ["a b"]
    assert not any(e["type"] == "response.completed" for e in events)
    assert in_flight(services)["alpha"] == 0


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{oops", 400, "invalid_json", None),
        (b"[1]", 400, "invalid_type", None),
        (orjson.dumps({"input": "x"}), 400, "missing_required_parameter", "model"),
        (orjson.dumps({"model": "alpha"}), 400, "missing_required_parameter", "input"),
        (orjson.dumps(ask(5)), 400, "invalid_type", "input"),
        (orjson.dumps(ask([])), 400, "invalid_value", "input"),
        (orjson.dumps(ask([{"role": "user", "content": 5}])), 400, "invalid_type", "input.0.content"),
        (orjson.dumps(ask([{"role": "robot", "content": "x"}])), 400, "invalid_value", "input.0.role"),
        (orjson.dumps(ask(temperature="warm")), 400, "invalid_type", "temperature"),
        (orjson.dumps(ask(max_output_tokens=0)), 400, "invalid_value", "max_output_tokens"),
        (orjson.dumps(ask(tool_choice="sometimes")), 400, "invalid_value", "tool_choice"),
        (orjson.dumps(ask(tool_choice="required")), 400, "invalid_value", "tool_choice"),
        (
            orjson.dumps(ask(tools=[WORD_TOOL], tool_choice={"type": "function", "name": "nope"})),
            400,
            None,
            "tool_choice",
        ),
        (orjson.dumps(ask(tools=[WORD_TOOL, {"type": "web_search"}])), 400, "unsupported_value", "tools.1.type"),
        (
            orjson.dumps(ask(tools=[WORD_TOOL], tool_choice={"type": "web_search_preview"})),
            400,
            "unsupported_value",
            "tool_choice",
        ),
        (
            orjson.dumps(ask([{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}])),
            400,
            "image_url_not_allowed",  # (no allowed image hosts: the gateway fetches nothing)
            "messages",
        ),
        (
            orjson.dumps(ask([{"type": "input_file", "file_id": "file_1"}])),
            400,
            "unsupported_value",
            "input.0.type",
        ),
        (
            orjson.dumps(ask(previous_response_id="resp_123")),
            400,
            "previous_response_not_found",
            "previous_response_id",
        ),
        (orjson.dumps(ask(conversation="conv_1")), 400, "unsupported_parameter", "conversation"),
        (orjson.dumps(ask(background=True)), 400, "unsupported_parameter", "background"),
        (
            orjson.dumps(ask(text={"format": {"type": "json_schema", "name": "x"}})),
            400,
            "missing_required_parameter",
            "text.format.schema",
        ),
        (orjson.dumps({"model": "gamma", "input": "x"}), 404, "model_not_found", "model"),
        (orjson.dumps(ask("CONTEXT")), 400, "context_length_exceeded", "messages"),
        (orjson.dumps(ask("FAIL_BEFORE")), 502, "engine_error", None),
    ],
)
async def test_bad_requests(
    client: httpx.AsyncClient, services: Services, body: bytes, status: int, code: str | None, param: str | None
) -> None:
    response = await client.post("/v1/responses", content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(response, status, code)
    assert error["param"] == param
    assert all(v == 0 for v in in_flight(services).values())
    assert (await client.post("/v1/responses", json=ask("still here"))).status_code == 200  # and it keeps serving


async def test_previous_response_id_says_why(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await client.post("/v1/responses", json=ask(previous_response_id="resp_1")), 400)
    assert "does not keep responses" in str(error["message"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/responses/resp_abc"),
        ("DELETE", "/v1/responses/resp_abc"),
        ("GET", "/v1/responses/resp_abc/input_items"),
        ("POST", "/v1/responses/resp_abc/cancel"),
    ],
)
async def test_stored_responses_are_not_found(client: httpx.AsyncClient, method: str, path: str) -> None:
    error = assert_openai_error(await client.request(method, path), 404, "not_found")
    assert "resp_abc" in str(error["message"]) and "does not keep responses" in str(error["message"])


async def test_auth_applies(client: httpx.AsyncClient) -> None:
    anonymous = {"authorization": ""}
    assert_openai_error(await client.post("/v1/responses", json=ask(), headers=anonymous), 401)
    wrong = as_key("sk-somner-not-a-key-000000000000000000000000000000")
    assert_openai_error(await client.post("/v1/responses", json=ask(), headers=wrong), 401)


async def test_rate_limit_applies(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (_, client):
        key = await make_key(client, rpm=1)
        first = await client.post("/v1/responses", json=ask(), headers=as_key(key))
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "1"
        refused = await client.post("/v1/responses", json=ask(stream=True), headers=as_key(key))
        assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert int(refused.headers["retry-after"]) >= 1
