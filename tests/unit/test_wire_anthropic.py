"""Anthropic wire schemas and codecs: what is accepted, how it maps onto the core, what is emitted."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from somner.core import Chunk, FinishReason, ToolCall, ToolCallDelta, ToolChoiceMode, Usage
from somner.errors import BadRequest, EngineFailed, RateLimited, SomnerError, Unavailable
from somner.wire.anthropic import decode, encode, schemas

BASE: dict[str, Any] = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def chat(**extra: Any) -> Any:
    return decode.chat_request(decode.parse(schemas.MessageCreateRequest, orjson.dumps({**BASE, **extra})))


def refusal(**extra: Any) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        chat(**extra)
    return info.value


def test_sampling_system_and_user_map_onto_the_core() -> None:
    core = chat(
        system=[{"type": "text", "text": "A."}, {"type": "text", "text": "B."}],
        stop_sequences=["END", "\n\n"],
        temperature=0.2,
        top_p=0.9,
        top_k=5,
        metadata={"user_id": "who"},
        stream=True,
        service_tier="auto",  # unknown fields are ignored
    )
    assert [(m.role, m.content) for m in core.messages] == [("system", "A.\n\nB."), ("user", "hi")]
    s = core.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.stop) == (10, 0.2, 0.9, 5, ["END", "\n\n"])
    assert core.user == "who" and core.stream is True
    assert chat(system="").messages[0].role == "user"  # an empty system prompt adds no message


@pytest.mark.parametrize(
    ("choice", "mode", "name", "parallel"),
    [
        (None, ToolChoiceMode.AUTO, None, True),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoiceMode.AUTO, None, False),
        ({"type": "any"}, ToolChoiceMode.REQUIRED, None, True),
        ({"type": "tool", "name": "f"}, ToolChoiceMode.FUNCTION, "f", True),
        ({"type": "none"}, ToolChoiceMode.NONE, None, True),
    ],
)
def test_tool_choices(choice: dict[str, Any] | None, mode: ToolChoiceMode, name: str | None, parallel: bool) -> None:
    tools = [{"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {}}}]
    core = chat(tools=tools, **({"tool_choice": choice} if choice else {}))
    assert (core.tool_choice.mode, core.tool_choice.name, core.parallel_tool_calls) == (mode, name, parallel)
    assert (core.tools[0].name, core.tools[0].description) == ("f", "does f")


def test_thinking_is_reasoning_and_a_budget_must_fit_in_max_tokens() -> None:
    assert chat(thinking={"type": "disabled"}).reasoning.enabled is False
    assert chat(thinking={"type": "enabled", "budget_tokens": 6}).reasoning.budget_tokens == 6
    assert refusal(thinking={"type": "enabled", "budget_tokens": 2048}).param == "thinking"  # (>= max_tokens)


def test_block_placement_is_checked() -> None:
    assistant_result = [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]
    assert refusal(messages=assistant_result).param == "messages.0.content.0"
    user_call = [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]
    assert refusal(messages=user_call).param == "messages.0.content.0"


def test_missing_max_tokens_is_named() -> None:
    body = {k: v for k, v in BASE.items() if k != "max_tokens"}
    with pytest.raises(BadRequest) as info:
        decode.parse(schemas.MessageCreateRequest, orjson.dumps(body))
    assert info.value.param == "max_tokens" and "Missing required parameter" in info.value.message


def test_count_request_keeps_tools_and_system() -> None:
    wire = decode.parse(
        schemas.CountTokensRequest,
        orjson.dumps(
            {"model": "m", "system": "S", "messages": BASE["messages"], "tools": [{"name": "f", "input_schema": {}}]}
        ),
    )
    core = decode.count_request(wire)
    assert [m.role for m in core.messages] == ["system", "user"] and core.tools[0].name == "f"


def test_whole_message() -> None:
    last = Chunk(finish_reason=FinishReason.STOP, stop_sequence="END", usage=Usage(10, 3, cached_tokens=4))
    body = encode.message("m", "hello", [], last)
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["content"] == [{"type": "text", "text": "hello"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")
    assert body["usage"] == {"input_tokens": 6, "cache_read_input_tokens": 4, "output_tokens": 3}
    assert encode.message("m", "", [], Chunk(finish_reason=FinishReason.STOP))["content"] == [
        {"type": "text", "text": ""}
    ]


def test_whole_message_with_tool_use() -> None:
    calls = [ToolCall(id="call_abc", name="f", arguments='{"x": 1}'), ToolCall(id="", name="g", arguments="")]
    body = encode.message("m", "", calls, Chunk(finish_reason=FinishReason.TOOL_CALLS))
    assert [b["type"] for b in body["content"]] == ["tool_use", "tool_use"]
    assert body["content"][0] == {"type": "tool_use", "id": "toolu_abc", "name": "f", "input": {"x": 1}}
    assert body["content"][1]["input"] == {} and body["content"][1]["id"].startswith("toolu_")
    assert body["stop_reason"] == "tool_use" and body["stop_sequence"] is None
    with pytest.raises(EngineFailed):
        encode.message("m", "", [ToolCall(id="c", name="f", arguments="[1]")], Chunk())


@pytest.mark.parametrize(
    ("finish", "stop", "reason"),
    [
        (FinishReason.STOP, None, "end_turn"),
        (FinishReason.LENGTH, None, "max_tokens"),
        (FinishReason.TOOL_CALLS, None, "tool_use"),
        (FinishReason.STOP, "###", "stop_sequence"),
        (None, None, "end_turn"),
    ],
)
def test_stop_reasons(finish: FinishReason | None, stop: str | None, reason: str) -> None:
    assert encode.stop_reason(finish, stop, called=False) == reason


def events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        if block:
            name, payload = block.split("\n")
            body = orjson.loads(payload.removeprefix("data: "))
            assert name == f"event: {body['type']}"
            out.append(body)
    return out


def test_stream_interleaves_text_and_tool_blocks() -> None:
    stream = encode.MessageStream("m")
    data = stream.start(12)
    data += stream.chunk(Chunk(text="Let me"))
    data += stream.chunk(Chunk(text=" check."))
    data += stream.chunk(Chunk(tool_calls=[ToolCallDelta(index=0, id="call_1", name="f", arguments='{"a"')]))
    data += stream.chunk(Chunk(tool_calls=[ToolCallDelta(index=0, arguments=": 1}")]))
    data += stream.chunk(Chunk(tool_calls=[ToolCallDelta(index=1, id="call_2", name="g", arguments="{}")]))
    data += stream.chunk(Chunk(finish_reason=FinishReason.TOOL_CALLS, usage=Usage(12, 9)))
    data += stream.finish() + encode.MESSAGE_STOP
    got = events(data)
    assert [(e["type"], e.get("index")) for e in got] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert got[0]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 0}
    assert got[6]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    assert got[7]["delta"] == {"type": "input_json_delta", "partial_json": '{"a"'}
    assert got[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[-2]["usage"] == {"input_tokens": 12, "cache_read_input_tokens": 0, "output_tokens": 9}


def test_stream_with_no_output_still_has_a_text_block_and_counts_without_usage() -> None:
    stream = encode.MessageStream("m")
    got = events(stream.finish())
    assert [e["type"] for e in got] == ["content_block_start", "content_block_stop", "message_delta"]
    assert got[-1]["usage"] == {"output_tokens": 0}
    stream = encode.MessageStream("m")
    stream.chunk(Chunk(text="a"))
    stream.chunk(Chunk(text="b", finish_reason=FinishReason.STOP, stop_sequence="c"))
    delta = events(stream.finish())[-1]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "c"}
    assert delta["usage"] == {"output_tokens": 2}


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (BadRequest("x"), "invalid_request_error"),
        (RateLimited("x"), "rate_limit_error"),
        (Unavailable("x"), "overloaded_error"),
        (EngineFailed("x"), "api_error"),
        (SomnerError("x"), "api_error"),
    ],
)
def test_error_envelope(error: SomnerError, kind: str) -> None:
    assert encode.error_body(error) == {"type": "error", "error": {"type": kind, "message": "x"}}
    assert encode.error_event(error).startswith(b"event: error\ndata: ")


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "authentication_error"), (403, "permission_error"), (404, "not_found_error"), (413, "request_too_large")],
)
def test_error_types_by_status(status: int, kind: str) -> None:
    assert encode.error_type(status) == kind


def test_structured_output_constrains_the_reply() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    core = chat(output_config={"effort": "low", "format": {"type": "json_schema", "schema": schema}})
    assert core.sampling.json_mode is True and core.sampling.json_schema == schema
    assert chat().sampling.json_schema is None and chat().sampling.json_mode is False
    assert refusal(output_config={"format": {"type": "json_schema"}}).param == "output_config.format.schema"
