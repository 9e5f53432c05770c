"""The official `anthropic` client against a running `somner serve` on the real default model (a tiny base model:
these tests assert on shapes, counts and schemas, not on what it says)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema
import orjson
import pytest
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock

from tests.fakes.mmproj_files import png
from tests.servers import ADMIN_KEY, ServeProcess

IMAGE: Any = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png(8, 8, seed=0)).decode()}

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
QUESTION: list[MessageParam] = [{"role": "user", "content": "Name a colour."}]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
GREEDY = {"temperature": 0}  # (this client no longer has sampling arguments; the API still takes them)
TOOLS: list[ToolParam] = [
    {"name": "get_forecast", "description": "The weather forecast for a city.", "input_schema": SCHEMA},
    {"name": "get_time", "description": "The time in a city.", "input_schema": {"type": "object", "properties": {}}},
]


@pytest.fixture(scope="module")
def client(serve: ServeProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=serve.url, api_key=ADMIN_KEY, max_retries=0) as sdk:
        yield sdk


def test_create(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(model=MODEL, max_tokens=12, system="Answer briefly.", messages=QUESTION)
    assert reply.type == "message" and reply.role == "assistant" and reply.model == MODEL
    assert reply.id.startswith("msg_")
    assert isinstance(reply.content[0], TextBlock)
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert 0 < reply.usage.output_tokens <= 12
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) > 0


def test_stream_and_create_stream_agree_with_create(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model=MODEL, max_tokens=10, extra_body=GREEDY, messages=QUESTION)
    with client.messages.stream(model=MODEL, max_tokens=10, extra_body=GREEDY, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert isinstance(whole.content[0], TextBlock)
    assert text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    total = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert total == whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)

    kinds: list[str] = []
    pieces: list[str] = []
    stop_reason = None
    for event in client.messages.create(model=MODEL, max_tokens=10, extra_body=GREEDY, messages=QUESTION, stream=True):
        kinds.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            pieces.append(event.delta.text)
        elif event.type == "message_delta":
            stop_reason = event.delta.stop_reason
            assert event.usage.output_tokens == whole.usage.output_tokens
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "".join(pieces) == text and stop_reason == whole.stop_reason


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    stops = [" ", "e", "a", "o"]  # one of these ends any English answer within a few tokens
    reply = client.messages.create(
        model=MODEL, max_tokens=16, extra_body=GREEDY, stop_sequences=stops, messages=QUESTION
    )
    assert reply.stop_reason == "stop_sequence"
    assert reply.stop_sequence in stops
    assert isinstance(reply.content[0], TextBlock) and reply.stop_sequence not in reply.content[0].text


def test_count_tokens_equals_the_prompt_of_a_create(client: anthropic.Anthropic) -> None:
    messages: list[MessageParam] = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": "Let me look."},
        {"role": "user", "content": [{"type": "text", "text": "Thanks, "}, {"type": "text", "text": "go on."}]},
    ]
    for extra in ({"system": "Be brief."}, {"tools": TOOLS}):
        counted = client.messages.count_tokens(model=MODEL, messages=messages, **extra)
        reply = client.messages.create(model=MODEL, max_tokens=1, messages=messages, **extra)
        assert counted.input_tokens > 10
        assert counted.input_tokens == reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)


@pytest.mark.parametrize("choice", [{"type": "tool", "name": "get_forecast"}, {"type": "any"}])
def test_forced_tool_use_validates_against_its_schema(client: anthropic.Anthropic, choice: dict[str, str]) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 60,  # (a whole call, with its JSON, is longer than a short answer)
        "extra_body": GREEDY,
        "messages": [{"role": "user", "content": "What will the weather be in Paris for the next 3 days?"}],
        "tools": TOOLS,
        "tool_choice": choice,
    }
    reply = client.messages.create(**request)
    assert reply.stop_reason == "tool_use"
    calls = [block for block in reply.content if isinstance(block, ToolUseBlock)]
    assert calls and all(call.id.startswith("toolu_") for call in calls)
    schemas = {tool["name"]: tool["input_schema"] for tool in TOOLS}
    for call in calls:
        jsonschema.validate(call.input, schemas[call.name])
    if choice["type"] == "tool":
        assert calls[0].name == "get_forecast"
        with client.messages.stream(**request) as stream:
            final = stream.get_final_message()
        streamed = [block for block in final.content if isinstance(block, ToolUseBlock)]
        assert [(c.name, c.input) for c in streamed] == [(c.name, c.input) for c in calls]
        assert final.stop_reason == "tool_use"
    # The reply goes back as history with the call's result, and the model answers.
    follow = client.messages.create(
        model=MODEL,
        max_tokens=8,
        messages=[
            request["messages"][0],
            reply.to_param(),  # the reply itself, as clients send it back
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny."}]},
        ],
        tools=TOOLS,
    )
    assert follow.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_structured_output_validates(client: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 8}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    reply = client.messages.create(
        model=MODEL,
        max_tokens=32,
        extra_body=GREEDY,
        messages=QUESTION,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert isinstance(reply.content[0], TextBlock)
    jsonschema.validate(orjson.loads(reply.content[0].text), schema)


def test_errors_surface_as_sdk_exceptions(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=4, messages=QUESTION)
    assert missing.value.status_code == 404
    assert isinstance(missing.value.body, dict) and missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model=MODEL,
            max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "image", "source": IMAGE}]}],
        )
    assert "reads text only" in bad.value.message  # (the default model has no projector: see test_vision.py)
    with pytest.raises(anthropic.AuthenticationError):
        client.with_options(api_key="sk-somner-wrong").messages.create(model=MODEL, max_tokens=4, messages=QUESTION)
    # ...and the server keeps serving.
    assert client.messages.create(model=MODEL, max_tokens=1, messages=QUESTION).content
