"""Several choices (`n`) through the core stream helpers, the OpenAI encoders and decoders, and the engine client;
and logprobs with token ids across the worker hop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import pytest

from somner.core import Chunk, FinishReason, TokenLogprob, TopLogprob, Usage
from somner.core.streams import Collected, choices_usage, collect_choices, merge_choices, total_usage
from somner.models.backends.openai_http import OpenAIHTTPClient
from somner.wire.openai import decode, encode

pytestmark = pytest.mark.anyio


async def stream_of(*chunks: Chunk) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        yield chunk


def finish(completion_tokens: int, prompt_tokens: int = 5) -> Chunk:
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=2)
    return Chunk(finish_reason=FinishReason.LENGTH, usage=usage)


async def test_merge_choices_indexes_and_counts_the_prompt_once() -> None:
    merged = [
        c
        async for c in merge_choices(
            [stream_of(Chunk(text="a"), finish(1)), stream_of(Chunk(text="b"), Chunk(text="c"), finish(2))]
        )
    ]
    assert sorted((c.index, c.text) for c in merged if c.text) == [(0, "a"), (1, "b"), (1, "c")]
    finishes = [c for c in merged if c.finish_reason is not None]
    assert sorted(c.index for c in finishes) == [0, 1]
    assert finishes[0].usage is None
    assert finishes[-1].usage == Usage(prompt_tokens=5, completion_tokens=3, cached_tokens=2)
    assert merged[-1] is finishes[-1]


async def test_one_choice_passes_through_untouched() -> None:
    last = finish(1)
    assert [c async for c in merge_choices([stream_of(Chunk(text="a"), last)])][-1].usage == last.usage


async def test_collect_choices() -> None:
    chunks = [
        Chunk(text="x", index=1),
        Chunk(text="y", index=0, logprobs=[TokenLogprob("y", -0.1, [121], [])]),
        Chunk(text="z", index=1),
        Chunk(index=0, finish_reason=FinishReason.STOP),
        Chunk(index=1, finish_reason=FinishReason.LENGTH, usage=Usage(prompt_tokens=3, completion_tokens=3)),
    ]
    seen: list[Chunk] = []
    results = await collect_choices(stream_of(*chunks), 2, seen.append)
    assert [r.text for r in results] == ["y", "xz"]
    assert [r.finish_reason for r in results] == [FinishReason.STOP, FinishReason.LENGTH]
    assert results[0].logprobs is not None and results[1].logprobs is None
    assert total_usage(results) == Usage(prompt_tokens=3, completion_tokens=3)
    assert len(seen) == 5
    assert choices_usage([]) == Usage()


def events(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]


def test_chat_stream_says_whose_each_event_is() -> None:
    stream = encode.ChatStream("m", include_usage=True)
    opening = events(stream.start(3))
    assert [e["choices"][0]["index"] for e in opening] == [0, 1, 2]
    assert all(e["choices"][0]["delta"]["role"] == "assistant" for e in opening)
    piece = events(stream.chunk(Chunk(text="hi", index=2)))
    assert piece[0]["choices"][0] == {"index": 2, "delta": {"content": "hi"}, "logprobs": None, "finish_reason": None}
    end = events(stream.chunk(Chunk(index=1, finish_reason=FinishReason.STOP, usage=Usage(4, 6))))
    assert end[0]["choices"][0]["index"] == 1 and end[0]["choices"][0]["finish_reason"] == "stop"
    assert end[1]["usage"]["completion_tokens"] == 6


def test_a_whole_chat_completion_with_choices() -> None:
    results = [Collected(text="a", last=Chunk(finish_reason=FinishReason.STOP)), Collected(text="bb", last=finish(2))]
    body = encode.chat_completion_choices("m", results, Usage(prompt_tokens=5, completion_tokens=3))
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in body["choices"]] == ["a", "bb"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert body["usage"]["prompt_tokens"] == 5 and body["usage"]["completion_tokens"] == 3


def test_completion_choices_are_numbered_in_order() -> None:
    results = [Collected(text=t, last=Chunk(finish_reason=FinishReason.STOP)) for t in "abcd"]
    body = encode.completion("m", results)
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]


LOGPROBS = [
    TokenLogprob(
        token="\ufffd",
        logprob=-0.5,
        bytes=[0xE2],
        top=[TopLogprob("\ufffd", -0.5, [0xE2], id=300), TopLogprob("\ufffd", -1.5, [0xE3], id=301)],
        id=300,
    )
]


def test_logprobs_keep_their_ids_across_the_hop() -> None:
    chat = encode.chat_logprobs(LOGPROBS)
    assert chat["content"][0]["id"] == 300 and chat["content"][0]["top_logprobs"][1]["id"] == 301
    event = {"choices": [{"index": 0, "delta": {"content": ""}, "logprobs": chat}]}
    assert decode.chat_chunk(event).logprobs == LOGPROBS
    legacy = encode.CompletionLogprobs().encode(LOGPROBS)
    assert legacy["top_logprobs"] == [{"\ufffd": -0.5}]  # (the legacy shape loses one of two alike tokens...)
    event = {"choices": [{"index": 3, "text": "", "logprobs": legacy}]}
    chunk = decode.completion_chunk(event)
    assert chunk.logprobs == LOGPROBS and chunk.index == 3  # (...its `content` extension keeps both)
    without_ids = {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": [{"a": -0.1}], "text_offset": [0]}
    plain = decode.completion_chunk({"choices": [{"text": "a", "logprobs": without_ids}]}).logprobs
    assert plain is not None and plain[0].id is None and plain[0].top[0].token == "a"


def sse(*bodies: dict[str, Any]) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for body in bodies:
            yield orjson.dumps(body)

    return gen()


async def test_the_engine_client_keeps_every_choice_and_puts_the_usage_on_the_last() -> None:
    client = OpenAIHTTPClient(cast(Any, None), label="the engine")
    usage = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    chunks = [
        c
        async for c in client._chunks(
            sse(
                {"choices": [{"index": 0, "delta": {"content": "a"}}]},
                {"choices": [{"index": 1, "delta": {"content": "b"}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [{"index": 1, "delta": {"content": "c"}}]},
                {"choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
                {"choices": [], "usage": usage},
            ),
            decode.chat_chunk,
        )
    ]
    assert [(c.index, c.text) for c in chunks if c.text] == [(0, "a"), (1, "b"), (1, "c")]
    ends = [c for c in chunks if c.finish_reason is not None]
    assert [(c.index, c.finish_reason) for c in ends] == [(0, FinishReason.STOP), (1, FinishReason.LENGTH)]
    assert chunks[-1] is ends[-1] and ends[-1].usage == Usage(prompt_tokens=4, completion_tokens=3)
    assert ends[0].usage is None
