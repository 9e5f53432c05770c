"""Each dialect's encoding of a reasoning model's chunks (thinking, then answer), and the engine wire both ways."""

from __future__ import annotations

from typing import Any

import orjson

from somner.core import ChatRequest, Chunk, FinishReason, Message, Reasoning, ReasoningFormat, Usage
from somner.wire.anthropic import encode as anthropic
from somner.wire.ollama import encode as ollama
from somner.wire.openai import decode as openai_decode
from somner.wire.openai import encode as openai
from somner.wire.openai import schemas
from somner.wire.openai.responses import encode as responses

CHUNKS = [
    Chunk(reasoning="Two and "),
    Chunk(reasoning="two."),
    Chunk(reasoning="", text="Four"),
    Chunk(finish_reason=FinishReason.STOP, usage=Usage(prompt_tokens=5, completion_tokens=6, reasoning_tokens=4)),
]


def events(blob: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in blob.split(b"\n") if line.startswith(b"data: {")]


def test_openai_stream_and_usage() -> None:
    stream = openai.ChatStream("m", include_usage=True)
    out = events(b"".join(stream.chunk(c) for c in CHUNKS))
    deltas = [e["choices"][0]["delta"] for e in out if e["choices"]]
    assert [d.get("reasoning_content") for d in deltas[:2]] == ["Two and ", "two."]
    assert deltas[2] == {"content": "Four"}
    assert out[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    whole = openai.chat_completion("m", "Four", CHUNKS[-1], None, reasoning="Two and two.")
    assert whole["choices"][0]["message"]["reasoning_content"] == "Two and two."
    plain = openai.chat_completion("m", "Four", Chunk(finish_reason=FinishReason.STOP, usage=Usage()), None)
    assert "reasoning_content" not in plain["choices"][0]["message"]  # (a model that does not reason: as before)
    assert "completion_tokens_details" not in plain["usage"]


def test_the_engine_wire_carries_options_and_thinking_both_ways() -> None:
    core = ChatRequest(
        model="m",
        messages=[Message(role="user", content="hi")],
        reasoning=Reasoning(format=ReasoningFormat.HARMONY, enabled=True, budget_tokens=9, effort="low"),
    )
    body = openai.chat_request(core)
    assert body["reasoning_format"] == "harmony" and body["reasoning_budget"] == 9
    assert body["chat_template_kwargs"] == {"enable_thinking": True, "reasoning_effort": "low"}
    again = openai_decode.chat_request(schemas.ChatCompletionRequest.model_validate(body))
    assert again.reasoning == core.reasoning
    plain = openai.chat_request(ChatRequest(model="m", messages=[Message(role="user", content="hi")]))
    assert not {"reasoning_format", "reasoning_budget", "chat_template_kwargs"} & set(plain)
    for field in ("reasoning_content", "reasoning"):  # (llama-server's name, and newer vLLM's)
        chunk = openai_decode.chat_chunk({"choices": [{"index": 0, "delta": {field: "hm"}}]})
        assert chunk.reasoning == "hm" and chunk.text == ""
    usage = openai_decode.usage_of(
        {"usage": {"completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 3}}}
    )
    assert usage is not None and usage.reasoning_tokens == 3


def test_anthropic_thinking_block_then_text() -> None:
    stream = anthropic.MessageStream("m")
    out = events(b"".join(stream.chunk(c) for c in CHUNKS) + stream.finish())
    kinds = [(e["type"], e.get("content_block", e.get("delta", {})).get("type")) for e in out]
    assert kinds == [
        ("content_block_start", "thinking"),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "signature_delta"),
        ("content_block_stop", None),
        ("content_block_start", "text"),
        ("content_block_delta", "text_delta"),
        ("content_block_stop", None),
        ("message_delta", None),
    ]
    whole = anthropic.message("m", "Four", [], CHUNKS[-1], "Two and two.")
    assert whole["content"][0] == {
        "type": "thinking",
        "thinking": "Two and two.",
        "signature": out[3]["delta"]["signature"],  # (the same signature, streamed or not)
    }
    assert whole["content"][1] == {"type": "text", "text": "Four"}


def test_ollama_thinking_fields() -> None:
    chat = ollama.ChatStream("m", ollama.Timeline())
    lines = [orjson.loads(line) for c in CHUNKS for line in chat.chunk(c).splitlines()]
    assert [line["message"].get("thinking") for line in lines] == ["Two and ", "two.", None, None]
    assert lines[2]["message"]["content"] == "Four"
    generate = ollama.GenerateStream("m", ollama.Timeline())
    first = orjson.loads(generate.chunk(CHUNKS[0]))
    assert (first["thinking"], first["response"]) == ("Two and ", "")


def test_responses_reasoning_item_then_message() -> None:
    stream = responses.ResponseStream(responses.Echo(model="m"))
    out = events(stream.start() + b"".join(stream.chunk(c) for c in CHUNKS) + stream.end())
    kinds = [e["type"] for e in out]
    assert kinds[2:8] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
    ]
    final = out[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": "Two and two."}]
    assert final["output"][0]["status"] == "completed"
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": 4}
