"""Responses API schemas and codecs: what is accepted, how it becomes a chat, what is emitted."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from somner.core import Chunk, FinishReason, ToolCallDelta, ToolChoiceMode, Usage
from somner.core.streams import Collected
from somner.errors import BadRequest, EngineFailed, RateLimited, SomnerError
from somner.wire.openai.responses import decode, encode, schemas


def parsed(**body: Any) -> schemas.ResponseRequest:
    return decode.parse(orjson.dumps({"model": "m", "input": "hi", **body}))


def error_of(**body: Any) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode.chat_request(parsed(**body))
    return info.value


def events_of(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(block.split(b"\ndata: ")[1]) for block in data.split(b"\n\n") if block]


# -- decode -------------------------------------------------------------------------------------------------


def test_parameter_names_leave_out_union_markers() -> None:
    assert error_of(tool_choice="bogus").param == "tool_choice"
    wrong = error_of(input=[{"role": "user", "content": 5}])
    assert wrong.param == "input.0.content"
    assert wrong.message == "Invalid value for 'input.0.content': Input should be a string or an array."
    assert error_of(input=[{"role": "user", "content": "x"}, {"type": "function_call", "name": "f"}]).param == (
        "input.1.call_id"
    )
    assert error_of(tools=[{"type": "function", "name": "has space"}]).param == "tools.0.name"


def test_string_input_with_instructions() -> None:
    core = decode.chat_request(parsed(instructions="Be terse.", max_output_tokens=7, stop="END", seed=3))
    assert [(m.role, m.content) for m in core.messages] == [("system", "Be terse."), ("user", "hi")]
    assert core.sampling.max_tokens == 7 and core.sampling.stop == ["END"] and core.sampling.seed == 3


def test_function_calls_join_the_assistant_turn_they_follow() -> None:
    items = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c9", "output": "unknown call"},
    ]
    messages = decode.chat_request(parsed(input=items)).messages
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool"]
    assert messages[1].content == "Let me look." and [c.id for c in messages[1].tool_calls] == ["c1"]
    assert (messages[2].name, messages[2].tool_call_id) == ("weather", "c1")
    assert (messages[3].name, messages[3].tool_call_id) == (None, "c9")


def test_unsupported_things_are_named() -> None:
    image = error_of(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}])
    assert image.param == "input.0.content.0.image_url" and "data URL" in image.message
    stored = error_of(input=[{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}])
    assert stored.code == "unsupported_content" and "file_id" in stored.message
    assert "item_reference" in error_of(input=[{"type": "item_reference", "id": "msg_1"}]).message
    assert "file_search" in error_of(tools=[{"type": "file_search"}]).message
    assert "allowed_tools" in error_of(tool_choice={"type": "allowed_tools", "mode": "auto", "tools": []}).message
    assert error_of(prompt={"id": "pmpt_1"}).param == "prompt"


def test_reasoning_truncation_and_store_are_accepted() -> None:
    core = decode.chat_request(parsed(reasoning={"effort": "low"}, truncation="auto", store=True, include=["x"]))
    assert core.messages[-1].content == "hi"


def test_echo_follows_what_was_applied() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}
    wire = parsed(tools=[tool], tool_choice={"type": "function", "name": "f"}, metadata={"a": "b"}, user="u")
    core = decode.chat_request(wire)
    assert core.tool_choice.mode is ToolChoiceMode.FUNCTION
    core.sampling.temperature = 0.3  # as a model's default would set it
    echo = decode.echo(wire, core)
    assert echo.temperature == 0.3
    assert echo.tool_choice == {"type": "function", "name": "f"}
    assert echo.tools == [
        {"type": "function", "name": "f", "description": None, **{k: tool[k] for k in ("parameters", "strict")}}
    ]
    assert echo.metadata == {"a": "b"} and echo.user == "u"
    assert echo.text == {"format": {"type": "text"}}


# -- encode -------------------------------------------------------------------------------------------------


ECHO = encode.Echo(model="m")


def collected(text: str, finish: FinishReason, calls: list[ToolCallDelta] | None = None) -> Collected:
    reply = Collected(text=text, last=Chunk(finish_reason=finish, usage=Usage(prompt_tokens=5, completion_tokens=2)))
    reply.tool_calls.add(calls)
    return reply


def test_whole_response() -> None:
    body = encode.response(ECHO, collected("hello", FinishReason.STOP))
    assert body["status"] == "completed" and body["store"] is False and body["previous_response_id"] is None
    assert body["output"][0]["content"][0]["text"] == "hello"
    assert body["usage"]["input_tokens"] == 5 and body["usage"]["total_tokens"] == 7
    cut = encode.response(ECHO, collected("hel", FinishReason.LENGTH))
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["output"][0]["status"] == "incomplete"
    empty = encode.response(ECHO, collected("", FinishReason.STOP))
    assert [item["type"] for item in empty["output"]] == ["message"]


def test_whole_response_with_calls() -> None:
    calls = [ToolCallDelta(index=0, id=None, name="f", arguments="{}"), ToolCallDelta(index=1, id="x", name="g")]
    body = encode.response(ECHO, collected("", FinishReason.TOOL_CALLS, calls))
    assert [(i["type"], i["name"]) for i in body["output"]] == [("function_call", "f"), ("function_call", "g")]
    assert body["output"][0]["call_id"].startswith("call_") and body["output"][1]["call_id"] == "x"
    with_text = encode.response(ECHO, collected("Calling.", FinishReason.TOOL_CALLS, calls[:1]))
    assert [i["type"] for i in with_text["output"]] == ["message", "function_call"]


def test_stream_closes_the_message_before_a_call() -> None:
    stream = encode.ResponseStream(ECHO)
    data = stream.start() + stream.chunk(Chunk(text="Let me"))
    data += stream.chunk(Chunk(tool_calls=[ToolCallDelta(index=0, id="c", name="f", arguments='{"a"')]))
    data += stream.chunk(Chunk(tool_calls=[ToolCallDelta(index=0, arguments=": 1}")]))
    data += stream.chunk(
        Chunk(finish_reason=FinishReason.TOOL_CALLS, usage=Usage(prompt_tokens=3, completion_tokens=4))
    )
    data += stream.end()
    events = events_of(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.delta")
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["message", "function_call"]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["arguments"] == '{"a": 1}' and final["output"][1]["call_id"] == "c"
    assert final["usage"]["output_tokens"] == 4


def test_empty_stream_still_has_a_message() -> None:
    stream = encode.ResponseStream(ECHO)
    events = events_of(stream.start() + stream.chunk(Chunk(finish_reason=FinishReason.STOP)) + stream.end())
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (EngineFailed("gone"), "server_error"),
        (RateLimited("slow down"), "rate_limit_exceeded"),
        (BadRequest("no"), "invalid_prompt"),
    ],
)
def test_failed_event(error: SomnerError, code: str) -> None:
    stream = encode.ResponseStream(ECHO)
    stream.start()
    stream.chunk(Chunk(text="partial"))
    [event] = events_of(stream.failed(error))
    assert (
        event["type"] == "response.failed" and event["sequence_number"] == 5
    )  # created, in_progress, added, part, delta
    response = event["response"]
    assert response["status"] == "failed" and response["error"]["code"] == code
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "partial"
