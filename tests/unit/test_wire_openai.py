"""OpenAI wire schemas and codecs: what is accepted, how errors are worded, what is emitted."""

from __future__ import annotations

import orjson
import pytest
from pydantic import BaseModel

from somner.core import IMAGE_MARKER, Chunk, FinishReason, Image, TokenLogprob, TopLogprob, Usage
from somner.errors import BadRequest
from somner.wire.openai import decode, encode, schemas


def parse_chat(body: object) -> schemas.ChatCompletionRequest:
    return decode.parse(schemas.ChatCompletionRequest, orjson.dumps(body))


def error_of(body: bytes | object, model: type[BaseModel] = schemas.ChatCompletionRequest) -> BadRequest:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(BadRequest) as info:
        wire = decode.parse(model, raw)
        if isinstance(wire, schemas.ChatCompletionRequest):
            decode.chat_request(wire)
        elif isinstance(wire, schemas.CompletionRequest):
            decode.completion_requests(wire)
    return info.value


BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_full_chat_request_converts() -> None:
    wire = parse_chat(
        {
            **BASE,
            "max_completion_tokens": 9,
            "max_tokens": 99,
            "temperature": 0,
            "top_p": 0.9,
            "top_k": 20,
            "min_p": 0.1,
            "typical_p": 0.8,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "repeat_penalty": 1.1,
            "seed": 7,
            "stop": "END",
            "logit_bias": {"42": -100},
            "logprobs": True,
            "top_logprobs": 3,
            "user": "u1",
            "unknown_field": {"ignored": True},
            "stream": True,
        }
    )
    core = decode.chat_request(wire)
    s = core.sampling
    assert (s.max_tokens, s.temperature, s.top_k, s.seed, s.stop, s.logit_bias, s.logprobs) == (
        9,
        0.0,
        20,
        7,
        ["END"],
        {42: -100.0},
        3,
    )
    assert core.stream and core.user == "u1"
    assert core.messages[0].content == "hi"


def test_text_parts_are_joined_and_image_parts_kept_in_place() -> None:
    wire = parse_chat(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        }
    )
    assert decode.chat_request(wire).messages[0].content == "ab"
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}
    wire = parse_chat({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, image]}]})
    message = decode.chat_request(wire).messages[0]
    assert message.content == f"a{IMAGE_MARKER}" and message.images == [Image(data=b"hi")]
    err = error_of(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    )
    assert err.param == "messages.0.content.0.image_url" and "data URL" in err.message
    audio = {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
    err = error_of({"model": "m", "messages": [{"role": "user", "content": [audio]}]})
    assert err.param == "messages.0.content" and "'input_audio' part" in err.message


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_type"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({**BASE, "temperature": "hot"}, "temperature", "invalid_type"),
        ({**BASE, "temperature": 5}, "temperature", "invalid_value"),
        ({**BASE, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({**BASE, "max_tokens": 1.5}, "max_tokens", "invalid_type"),
        ({**BASE, "messages": []}, "messages", "invalid_value"),
        ({**BASE, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role", "invalid_value"),
        ({**BASE, "stop": 5}, "stop", "invalid_type"),
        ({**BASE, "n": 17}, "n", "invalid_value"),
        ({**BASE, "logit_bias": {"abc": 1}}, "logit_bias", "invalid_value"),
        ({**BASE, "logit_bias": {"1": 500}}, "logit_bias.1", "invalid_value"),
        ({**BASE, "top_logprobs": 2}, "top_logprobs", "invalid_value"),
        (
            {**BASE, "response_format": {"type": "json_schema"}},
            "response_format.json_schema",
            "missing_required_parameter",
        ),
        ({**BASE, "response_format": {"type": "xml"}}, "response_format.type", "invalid_value"),
        ({**BASE, "model": ""}, "model", "invalid_value"),
    ],
)
def test_bad_chat_requests_name_the_parameter(body: object, param: str | None, code: str) -> None:
    err = error_of(body)
    assert (err.param, err.code, err.status) == (param, code, 400)
    assert err.kind == "invalid_request_error"


def test_response_format_becomes_constraints() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    core = decode.chat_request(
        parse_chat({**BASE, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    )
    assert core.sampling.json_schema == schema
    core = decode.chat_request(parse_chat({**BASE, "response_format": {"type": "json_object"}}))
    assert core.sampling.json_mode and core.sampling.json_schema is None
    err = error_of({**BASE, "grammar": "root ::= x", "response_format": {"type": "json_object"}})
    assert err.param == "response_format"


def test_completion_prompts() -> None:
    def prompts(p: object) -> list[object]:
        wire = decode.parse(schemas.CompletionRequest, orjson.dumps({"model": "m", "prompt": p}))
        return [r.prompt for r in decode.completion_requests(wire)]

    assert prompts("x") == ["x"]
    assert prompts(["a", "b"]) == ["a", "b"]
    assert prompts([1, 2, 3]) == [[1, 2, 3]]
    assert prompts([[1], [2, 3]]) == [[1], [2, 3]]
    assert error_of({"model": "m", "prompt": []}, schemas.CompletionRequest).param == "prompt"
    assert error_of({"model": "m", "prompt": [1, "a"]}, schemas.CompletionRequest).param == "prompt"
    assert error_of({"model": "m", "prompt": "x", "echo": True}, schemas.CompletionRequest).param == "echo"
    assert error_of({"model": "m", "prompt": "x", "logprobs": 9}, schemas.CompletionRequest).param == "logprobs"


def test_request_encoding_round_trips() -> None:
    core = decode.chat_request(
        parse_chat(
            {
                **BASE,
                "temperature": 0.5,
                "stop": ["a"],
                "logit_bias": {"3": 1},
                "logprobs": True,
                "top_logprobs": 2,
                "response_format": {"type": "json_object"},
            }
        )
    )
    again = decode.chat_request(parse_chat(encode.chat_request(core)))
    assert again.sampling == core.sampling
    assert again.messages == core.messages


def events(data: bytes) -> list[dict[str, object]]:
    out = []
    for block in data.split(b"\n\n"):
        if block:
            assert block.startswith(b"data: ")
            out.append(orjson.loads(block[6:]))
    return out


def test_chat_stream_shape() -> None:
    stream = encode.ChatStream("m", include_usage=True)
    first = events(stream.start())[0]
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    lp = [TokenLogprob("Hi", -0.1, [72, 105], [TopLogprob("Hi", -0.1, [72, 105])])]
    middle = events(stream.chunk(Chunk(text="Hi", logprobs=lp)))[0]
    assert middle["choices"][0]["delta"] == {"content": "Hi"}  # type: ignore[index]
    assert middle["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["token"] == "Hi"  # type: ignore[index]
    end = events(stream.chunk(Chunk(finish_reason=FinishReason.LENGTH, usage=Usage(3, 4, 1))))
    assert end[0]["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    assert end[1]["choices"] == [] and end[1]["usage"]["total_tokens"] == 7  # type: ignore[index]
    assert end[1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 1}  # type: ignore[index]


def test_chunk_decoding_reads_what_encoding_wrote() -> None:
    stream = encode.ChatStream("m", include_usage=True, with_timings=True)
    lp = [TokenLogprob("a", -1.0, [97], [TopLogprob("b", -2.0, [98])])]
    raw = events(stream.chunk(Chunk(text="a", logprobs=lp)))[0]
    assert decode.chat_chunk(raw) == Chunk(text="a", logprobs=lp)
    final = events(stream.chunk(Chunk(finish_reason=FinishReason.STOP, usage=Usage(1, 2, 0))))
    assert decode.chat_chunk(final[0]).finish_reason is FinishReason.STOP
    assert decode.chat_chunk(final[1]).usage == Usage(1, 2, 0)


def test_completion_logprobs_offsets() -> None:
    stream = encode.CompletionStream("m", include_usage=False)
    lps = [TokenLogprob("ab", -1.0, [97, 98], []), TokenLogprob("c", -2.0, [99], [])]
    first = events(stream.chunk(Chunk(text="ab", logprobs=lps[:1])))[0]
    second = events(stream.chunk(Chunk(text="c", logprobs=lps[1:])))[0]
    assert first["choices"][0]["logprobs"]["text_offset"] == [0]  # type: ignore[index]
    assert second["choices"][0]["logprobs"]["text_offset"] == [2]  # type: ignore[index]


def test_error_envelope() -> None:
    body = encode.error_body(BadRequest("nope", param="x", code="c"))
    assert body == {"error": {"message": "nope", "type": "invalid_request_error", "param": "x", "code": "c"}}
