"""The Ollama wire codecs: options onto sampling, messages and tools onto core types, and the encoded lines."""

from __future__ import annotations

import re

import orjson
import pytest

from somner.core import ChatRequest, Chunk, CompletionRequest, FinishReason, Timings, ToolCall, Usage
from somner.errors import BadRequest
from somner.wire.ollama import decode, encode, schemas


def chat_body(**extra: object) -> schemas.ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    return decode.parse(schemas.ChatRequest, orjson.dumps(body))


def generate_body(**extra: object) -> schemas.GenerateRequest:
    return decode.parse(schemas.GenerateRequest, orjson.dumps({"model": "m", "prompt": "hi", **extra}))


def test_stream_defaults_to_true() -> None:
    assert chat_body().stream is True
    assert decode.chat_request(chat_body(stream=False)).stream is False


@pytest.mark.parametrize(("num_predict", "expected"), [(None, None), (-1, None), (-2, None), (5, 5)])
def test_num_predict(num_predict: int | None, expected: int | None) -> None:
    core = decode.chat_request(chat_body(options={"num_predict": num_predict}))
    assert core.sampling.max_tokens == expected


@pytest.mark.parametrize("num_predict", [0, -3])
def test_num_predict_out_of_range(num_predict: int) -> None:
    with pytest.raises(BadRequest, match="num_predict"):
        decode.chat_request(chat_body(options={"num_predict": num_predict}))


def test_options_types_are_checked_and_named() -> None:
    with pytest.raises(BadRequest, match=r"options\.top_k"):
        chat_body(options={"top_k": 1.5})
    with pytest.raises(BadRequest, match=r"options\.top_p"):
        chat_body(options={"top_p": 2})
    assert decode.chat_request(chat_body(options={"stop": "END", "temperature": 1})).sampling.stop == ["END"]


def test_formats() -> None:
    assert decode.chat_request(chat_body(format="json")).sampling.json_mode
    plain = decode.chat_request(chat_body(format="")).sampling
    assert not plain.json_mode and plain.json_schema is None
    schema = {"type": "object"}
    assert decode.chat_request(chat_body(format=schema)).sampling.json_schema == schema
    with pytest.raises(BadRequest, match="format"):
        decode.chat_request(chat_body(format="xml"))


def test_tool_history_gets_ids() -> None:
    body = chat_body(
        messages=[
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "a", "arguments": {"x": 1}}},
                    {"function": {"name": "b", "arguments": {}}},
                ],
            },
            {"role": "tool", "tool_name": "b", "content": "B"},
            {"role": "tool", "content": "A"},
        ],
        tools=[{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}],
    )
    core = decode.chat_request(body)
    calls = core.messages[1].tool_calls
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [("a", {"x": 1}), ("b", {})]
    assert calls[0].id != calls[1].id
    assert core.messages[2].tool_call_id == calls[1].id and core.messages[2].name == "b"
    assert core.messages[3].tool_call_id == calls[0].id
    assert [t.name for t in core.tools] == ["a", "b"]
    assert core.tools[0].parameters == {"type": "object", "properties": {}}


def test_duplicate_tools_are_refused() -> None:
    tool = {"type": "function", "function": {"name": "a"}}
    with pytest.raises(BadRequest):
        decode.chat_request(chat_body(tools=[tool, tool]))


def test_generate_requests() -> None:
    chat = decode.generate_request(generate_body(system="s"))
    assert isinstance(chat, ChatRequest) and [m.role for m in chat.messages] == ["system", "user"]
    raw = decode.generate_request(generate_body(raw=True, system="ignored"))
    assert isinstance(raw, CompletionRequest) and raw.prompt == "hi"
    assert decode.is_load_only(generate_body(prompt=""))
    assert not decode.is_load_only(generate_body())
    for extra, word in (
        ({"suffix": "x"}, "suffix"),
        ({"template": "t"}, "template"),
        ({"context": [1]}, "context"),
        ({"images": ["x"]}, "images"),
        ({"think": "extreme"}, "think"),
    ):
        with pytest.raises(BadRequest, match=word):
            decode.generate_request(generate_body(**extra))
    # Empty or false values of the unsupported fields are fine.
    decode.generate_request(generate_body(suffix="", template="", context=[], images=[], think=False))


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("hf.co/org/repo:Q4_K_M", "hf:org/repo:Q4_K_M"),
        ("hf.co/org/repo", "hf:org/repo"),
        ("hf.co/org/repo:latest", "hf:org/repo"),
        ("huggingface.co/org/repo:file.gguf", "hf:org/repo:file.gguf"),
        ("https://huggingface.co/org/repo", "hf:org/repo"),
        ("hf:org/repo", "hf:org/repo"),
        ("https://example.com/m.gguf", "https://example.com/m.gguf"),
    ],
)
def test_pull_sources(name: str, source: str) -> None:
    assert decode.pull_source(name) == source


@pytest.mark.parametrize("name", ["llama3", "qwen2:7b", "library/llama3", "https://example.com/page"])
def test_ollama_library_names_are_refused(name: str) -> None:
    with pytest.raises(BadRequest, match="Ollama library"):
        decode.pull_source(name)


def test_model_name() -> None:
    assert decode.model_name(None, "old") == "old"
    assert decode.model_name("new", "old") == "new"
    with pytest.raises(BadRequest, match="model"):
        decode.model_name(None, None)


def test_created_at_has_nanoseconds() -> None:
    assert encode.created_at(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", encode.created_at())


def test_metrics_prefer_engine_timings() -> None:
    timeline = encode.Timeline(started=0, loaded=1_000, first_token=5_000, ended=10_000)
    usage = Usage(prompt_tokens=3, completion_tokens=4)
    measured = encode.metrics(timeline, usage, Chunk())
    assert measured == {
        "total_duration": 10_000,
        "load_duration": 1_000,
        "prompt_eval_count": 3,
        "prompt_eval_duration": 4_000,
        "eval_count": 4,
        "eval_duration": 5_000,
    }
    timed = encode.metrics(timeline, usage, Chunk(timings=Timings(prompt_ms=2.0, predicted_ms=3.5)))
    assert (timed["prompt_eval_duration"], timed["eval_duration"]) == (2_000_000, 3_500_000)


def test_generate_stream_lines() -> None:
    timeline = encode.Timeline()
    stream = encode.GenerateStream("m:latest", timeline)
    out = stream.chunk(Chunk(text="a")) + stream.chunk(Chunk(text=" b"))
    out += stream.chunk(Chunk(finish_reason=FinishReason.LENGTH))  # an engine that reports no usage
    events = [orjson.loads(line) for line in out.splitlines()]
    assert [e["response"] for e in events] == ["a", " b", ""]
    assert events[-1]["done_reason"] == "length" and events[-1]["eval_count"] == 2
    assert events[-1]["prompt_eval_count"] == 0 and events[0]["model"] == "m:latest"
    assert out.endswith(b"\n") and out.count(b"\n") == 3


def test_tool_call_arguments_are_objects() -> None:
    calls = [ToolCall(id="1", name="f", arguments='{"a": [1]}'), ToolCall(id="2", name="g", arguments="not json")]
    assert encode.tool_calls(calls) == [
        {"id": "1", "function": {"index": 0, "name": "f", "arguments": {"a": [1]}}},
        {"id": "2", "function": {"index": 1, "name": "g", "arguments": {"arguments": "not json"}}},
    ]
    body = encode.chat_response("m", encode.Timeline(), "", Chunk(finish_reason=FinishReason.TOOL_CALLS), calls=calls)
    assert body["message"]["tool_calls"][0]["function"]["arguments"] == {"a": [1]}
    assert body["done_reason"] == "stop"


def test_error_line() -> None:
    assert encode.error_line(BadRequest("no")) == b'{"error":"no"}\n'
