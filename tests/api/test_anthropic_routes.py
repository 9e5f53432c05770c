"""The Anthropic routes (`/v1/messages`, `/v1/messages/count_tokens`) and their error envelope, over fake backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from somner.app import create_app
from somner.core import ChatRequest, ToolChoiceMode
from somner.services import Services
from tests.api.conftest import running
from tests.api.shapes import assert_dialect_error
from tests.api.test_gateway import make_key
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

VERSION = {"anthropic-version": "2023-06-01"}


def message(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "alpha", "max_tokens": 64, "messages": [{"role": "user", "content": content}], **extra}


def sse(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs; every event is named and its name matches its data's type."""
    out = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        name, data = name_line[7:], orjson.loads(data_line[6:])
        assert data["type"] == name
        out.append((name, data))
    return out


def assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    text = assert_dialect_error(response, "anthropic", status)
    assert response.json()["error"]["type"] == kind
    return text


def last_chat(farm: FakeFarm) -> ChatRequest:
    sent = farm.backends[0].requests[-1]
    assert isinstance(sent, ChatRequest)
    return sent


def in_flight(services: Services) -> dict[str, int]:
    return {s.id: s.in_flight for s in services.manager.statuses()}


async def test_plain_message(client: httpx.AsyncClient, services: Services, farm: FakeFarm) -> None:
    response = await client.post(
        "/v1/messages",
        json=message("one two three", system="Be brief.", metadata={"user_id": "u-7"}, temperature=0.5, top_k=4),
        headers=VERSION,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "alpha"
    assert body["content"] == [{"type": "text", "text": "one two three"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    # The fake counts one prompt token per message: the system prompt and the user's message.
    assert body["usage"] == {"input_tokens": 2, "cache_read_input_tokens": 0, "output_tokens": 3}
    sent = last_chat(farm)
    assert [(m.role, m.content) for m in sent.messages] == [("system", "Be brief."), ("user", "one two three")]
    assert sent.user == "u-7"
    assert (sent.sampling.max_tokens, sent.sampling.temperature, sent.sampling.top_k) == (64, 0.5, 4)
    assert in_flight(services)["alpha"] == 0


async def test_max_tokens_and_stop_sequences(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    body = (await client.post("/v1/messages", json=message("a b c d", max_tokens=2, stop_sequences=["z"]))).json()
    assert body["content"][0]["text"] == "a b"
    assert body["stop_reason"] == "max_tokens" and body["stop_sequence"] is None
    assert last_chat(farm).sampling.stop == ["z"]


async def test_content_blocks_and_tool_results_become_core_messages(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    history = [
        {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "please"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "rain"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "down", "is_error": True},
                {"type": "text", "text": "thanks then"},
            ],
        },
    ]
    tools = [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    response = await client.post(
        "/v1/messages", json={"model": "alpha", "max_tokens": 8, "messages": history, "tools": tools}
    )
    assert response.status_code == 200, response.text
    assert response.json()["content"] == [{"type": "text", "text": "thanks then"}]
    sent = last_chat(farm)
    assert [(m.role, m.content, m.tool_call_id, m.name) for m in sent.messages] == [
        ("user", "weather please", None, None),
        ("assistant", "Looking.", None, None),
        ("tool", "rain", "toolu_1", "weather"),
        ("tool", "Error: down", "toolu_2", None),
        ("user", "thanks then", None, None),
    ]
    call = sent.messages[1].tool_calls[0]
    assert (call.id, call.name, orjson.loads(call.arguments)) == ("toolu_1", "weather", {"city": "Oslo"})
    assert sent.tools[0].parameters["properties"] == {"city": {"type": "string"}}
    assert sent.tool_choice.mode is ToolChoiceMode.AUTO and sent.parallel_tool_calls


async def test_streamed_event_sequence(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/messages", json=message("x y z", stream=True, max_tokens=2))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response.content)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    assert set(start["usage"]) >= {"input_tokens", "output_tokens"}
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "x y"
    assert all(data["delta"]["type"] == "text_delta" for name, data in events if name == "content_block_delta")
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 2 and delta["usage"]["input_tokens"] == 1
    assert in_flight(services)["alpha"] == 0


def weather_tools() -> list[dict[str, Any]]:
    schema = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
    return [
        {"name": "lookup", "description": "Look a word up.", "input_schema": schema},
        {"name": "spell", "input_schema": schema},
    ]


@pytest.mark.parametrize(
    ("choice", "name", "mode"),
    [({"type": "any"}, "lookup", ToolChoiceMode.REQUIRED), ({"type": "tool", "name": "spell"}, "spell", None)],
)
async def test_forced_tool_use(
    client: httpx.AsyncClient, farm: FakeFarm, choice: dict[str, Any], name: str, mode: ToolChoiceMode | None
) -> None:
    body = (
        await client.post(
            "/v1/messages",
            json=message(
                "hello world", tools=weather_tools(), tool_choice={**choice, "disable_parallel_tool_use": True}
            ),
        )
    ).json()
    assert body["stop_reason"] == "tool_use"
    [block] = body["content"]
    assert block["type"] == "tool_use" and block["name"] == name and block["input"] == {"word": "hello"}
    assert block["id"].startswith("toolu_")
    sent = last_chat(farm)
    assert sent.tool_choice.mode is (mode or ToolChoiceMode.FUNCTION)
    assert sent.tool_choice.name == (None if mode else name)
    assert sent.parallel_tool_calls is False


async def test_streamed_tool_use(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/messages", json=message("hi there", tools=weather_tools(), tool_choice={"type": "any"}, stream=True)
    )
    events = sse(response.content)
    starts = [data for name, data in events if name == "content_block_start"]
    assert len(starts) == 1
    block = starts[0]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "lookup" and block["input"] == {}
    assert block["id"].startswith("toolu_")
    pieces = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(p["type"] == "input_json_delta" for p in pieces) and len(pieces) == 2
    assert orjson.loads("".join(p["partial_json"] for p in pieces)) == {"word": "hi"}
    assert [name for name, _ in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_tool_choice_none_and_auto_pass_through(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    body = (
        await client.post("/v1/messages", json=message("a b", tools=weather_tools(), tool_choice={"type": "none"}))
    ).json()
    assert body["content"] == [{"type": "text", "text": "a b"}] and body["stop_reason"] == "end_turn"
    assert last_chat(farm).tool_choice.mode is ToolChoiceMode.NONE


async def test_failure_mid_stream_ends_with_an_error_event(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/messages", json=message("a b FAIL_MIDWAY d", stream=True))
    assert response.status_code == 200
    events = sse(response.content)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": events[-1][1]["error"]["message"]}},
    )
    assert "message_stop" not in [name for name, _ in events]
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "a b"
    assert in_flight(services)["alpha"] == 0


async def test_count_tokens_renders_the_chat_template(client: httpx.AsyncClient, services: Services) -> None:
    # The fake template is "role: content" per message and its tokenizer one token per word.
    body = {
        "model": "beta",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": "one two three"}],
    }
    response = await client.post("/v1/messages/count_tokens", json=body, headers=VERSION)
    assert response.status_code == 200, response.text
    assert response.json() == {"input_tokens": 7}  # "system: Be brief. user: one two three"
    assert in_flight(services)["beta"] == 0
    assert_anthropic_error(
        await client.post("/v1/messages/count_tokens", json={**body, "model": "gamma"}), 404, "not_found_error"
    )
    assert_anthropic_error(
        await client.post("/v1/messages/count_tokens", json={"model": "beta"}), 400, "invalid_request_error"
    )


def without(key: str) -> dict[str, Any]:
    body = message("x")
    del body[key]
    return body


@pytest.mark.parametrize(
    ("body", "status", "kind", "words"),
    [
        (b"{oops", 400, "invalid_request_error", "JSON"),
        (b"[1]", 400, "invalid_request_error", "object"),
        (without("max_tokens"), 400, "invalid_request_error", "max_tokens"),
        (without("messages"), 400, "invalid_request_error", "messages"),
        (without("model"), 400, "invalid_request_error", "model"),
        (message("x", max_tokens="many"), 400, "invalid_request_error", "max_tokens"),
        (message("x", max_tokens=0), 400, "invalid_request_error", "max_tokens"),
        (message("x", temperature="warm"), 400, "invalid_request_error", "temperature"),
        (message("x", stop_sequences="END"), 400, "invalid_request_error", "stop_sequences"),
        (message(7), 400, "invalid_request_error", "messages.0.content"),
        ({"model": "alpha", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, 400, None, "role"),
        ({"model": "alpha", "max_tokens": 5, "messages": []}, 400, None, "messages"),
        (message([{"type": "video", "url": "x"}]), 400, None, "'video'"),
        (
            message([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]),
            400,
            None,
            "not a PNG, JPEG, GIF or BMP",  # (vision: see tests/integration/test_vision.py)
        ),
        (
            message([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}]),
            400,
            None,
            "does not support images",
        ),
        (message([{"type": "document", "source": {}}]), 400, None, "does not support documents"),
        (message("x", thinking={"type": "enabled", "budget_tokens": 1024}), 400, None, "thinking"),
        (message("x", tool_choice={"type": "any"}), 400, None, "tool_choice"),
        (message("x", tools=weather_tools(), tool_choice={"type": "tool", "name": "nope"}), 400, None, "nope"),
        (message("x", tools=[{"name": "bad name!", "input_schema": {}}]), 400, None, "tools.0.name"),
        (message("x", tools=[{"type": "web_search_20250305", "name": "web_search"}]), 400, None, "tools.0"),
        (message("x", tools=[{"name": "f"}]), 400, None, "tools.0.input_schema"),
        ({**message("x"), "model": "gamma"}, 404, "not_found_error", "gamma"),
        (message("CONTEXT"), 400, None, "too long"),
        (message("FAIL_BEFORE"), 502, "api_error", "refused"),
    ],
)
async def test_bad_requests(
    client: httpx.AsyncClient,
    services: Services,
    body: bytes | dict[str, Any],
    status: int,
    kind: str | None,
    words: str,
) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    text = assert_anthropic_error(response, status, kind or "invalid_request_error")
    assert words in text
    assert all(v == 0 for v in in_flight(services).values())
    # ...and the server keeps serving.
    assert (await client.post("/v1/messages", json=message("ok"))).status_code == 200


async def test_internal_errors_hide_details(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json=message("BOOM"), headers={"x-request-id": "req-9"})
    text = assert_anthropic_error(response, 500, "api_error")
    assert "req-9" in text and "secret" not in response.text


async def test_keys_in_x_api_key_and_rate_limits(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (services, admin):
        app = create_app(services.settings, services=services)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as anonymous:
            for headers in ({}, {"x-api-key": "sk-somner-wrong"}, {"authorization": "Bearer sk-somner-wrong"}):
                response = await anonymous.post("/v1/messages", json=message("x"), headers={**VERSION, **headers})
                assert_anthropic_error(response, 401, "authentication_error")
                response = await anonymous.post(
                    "/v1/messages/count_tokens", json=message("x"), headers={**VERSION, **headers}
                )
                assert_anthropic_error(response, 401, "authentication_error")
            key = await make_key(admin, rpm=1)
            first = await anonymous.post("/v1/messages", json=message("x"), headers={"x-api-key": key})
            assert first.status_code == 200, first.text
            second = await anonymous.post("/v1/messages", json=message("x"), headers={"x-api-key": key})
            assert_anthropic_error(second, 429, "rate_limit_error")
            assert int(second.headers["retry-after"]) >= 1
