"""The gateway's side of `n`, logprobs and the sampler set, over fake backends: choices encoded with their
indexes (chat and completions, streamed and whole), usage counting the prompt once, the sampler fields reaching
the engine, and every dialect's bad sampler values as 400s in its own shape."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest

from somner.core import ChatRequest, CompletionRequest
from somner.services import Services
from tests.api.shapes import assert_dialect_error
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "alpha", "messages": [{"role": "user", "content": content}], **extra}


def data_events(body: bytes) -> list[Any]:
    return [
        orjson.loads(block[6:]) for block in body.split(b"\n\n") if block.startswith(b"data: {")
    ]  # (without [DONE])


async def test_chat_with_choices(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/chat/completions", json=chat("one two three", n=3))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == ["one two three", "two three one", "three one two"]
    assert body["usage"]["prompt_tokens"] == 1 and body["usage"]["completion_tokens"] == 9
    streamed = await client.post("/v1/chat/completions", json=chat("one two three", n=3, stream=True))
    assert streamed.status_code == 200
    await services.recorder.flush()
    records = await services.usage.all()
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [(1, 9), (1, 9)]  # every choice counted


async def test_streamed_chat_with_choices(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json=chat("a b", n=2, stream=True, stream_options={"include_usage": True})
    )
    events = data_events(response.content)
    texts: dict[int, str] = defaultdict(str)
    roles, finishes = set(), {}
    for event in events:
        for choice in event["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["delta"].get("role"):
                roles.add(choice["index"])
            if choice["finish_reason"]:
                finishes[choice["index"]] = choice["finish_reason"]
    assert dict(texts) == {0: "a b", 1: "b a"}
    assert roles == {0, 1} and finishes == {0: "stop", 1: "stop"}
    assert events[-1]["usage"]["completion_tokens"] == 4


async def test_completions_with_prompts_and_choices(client: httpx.AsyncClient) -> None:
    body = {"model": "alpha", "prompt": ["a b", "c d e"], "n": 2}
    whole = (await client.post("/v1/completions", json=body)).json()
    assert [(c["index"], c["text"]) for c in whole["choices"]] == [
        (0, "a b"),
        (1, "b a"),
        (2, "c d e"),
        (3, "d e c"),
    ]
    assert whole["usage"] == {
        "prompt_tokens": 2 + 3,
        "completion_tokens": 2 * 2 + 3 * 2,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    streamed = await client.post("/v1/completions", json={**body, "stream": True})
    texts: dict[int, str] = defaultdict(str)
    for event in data_events(streamed.content):
        for choice in event["choices"]:
            texts[choice["index"]] += choice["text"]
    assert dict(texts) == {c["index"]: c["text"] for c in whole["choices"]}


async def test_logprobs_reach_the_client_per_choice(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/chat/completions", json=chat("x y", n=2, logprobs=True, top_logprobs=0))).json()
    for choice in body["choices"]:
        tokens = [e["token"] for e in choice["logprobs"]["content"]]
        assert " ".join(tokens) == choice["message"]["content"]
        assert all(e["logprob"] <= 0 for e in choice["logprobs"]["content"])


async def test_the_sampler_set_reaches_the_engine(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    extra = {
        "temperature_last": False,
        "min_temp": 0.4,
        "max_temp": 1.0,
        "top_a": 0.1,
        "tfs": 0.9,
        "top_n_sigma": 1.5,
        "xtc_probability": 0.5,
        "xtc_threshold": 0.1,
        "rep_pen": 1.2,
        "penalty_range": 100,
        "dry_multiplier": 0.8,
        "dry_sequence_breakers": ["\n"],
        "mirostat_mode": 2,
        "banned_strings": ["slop"],
        "banned_tokens": "1,2",
        "allowed_tokens": [1, 2, 3],
        "min_tokens": 2,
    }
    assert (await client.post("/v1/chat/completions", json=chat("x", **extra))).status_code == 200
    (request,) = farm.backends[0].requests
    assert isinstance(request, ChatRequest)
    params = request.sampling
    assert params.temperature_last is False
    assert params.temperature == pytest.approx(0.7) and params.dynatemp_range == pytest.approx(0.3)
    assert (params.top_a, params.tfs, params.top_n_sigma) == (0.1, 0.9, 1.5)
    assert (params.repeat_penalty, params.repeat_last_n, params.mirostat) == (1.2, 100, 2)
    assert params.banned_strings == ["slop"] and params.banned_tokens == [1, 2] and params.allowed_tokens == [1, 2, 3]
    assert params.min_tokens == 2 and params.dry_sequence_breakers == ["\n"]


async def test_ollama_options_reach_the_engine(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    options = {"mirostat": 1, "mirostat_tau": 3.0, "tfs_z": 0.8, "xtc_probability": 0.2, "dry_multiplier": 0.5}
    response = await client.post(
        "/api/generate", json={"model": "alpha", "prompt": "x", "raw": True, "stream": False, "options": options}
    )
    assert response.status_code == 200, response.text
    (request,) = farm.backends[0].requests
    assert isinstance(request, CompletionRequest)
    assert (request.sampling.mirostat, request.sampling.mirostat_tau, request.sampling.tfs) == (1, 3.0, 0.8)
    assert (request.sampling.xtc_probability, request.sampling.dry_multiplier) == (0.2, 0.5)


async def test_kobold_logprobs(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    body = {"prompt": "one two", "max_length": 4, "logprobs": True, "top_a": 0.2, "banned_tokens": ["three"]}
    response = await client.post("/api/v1/generate", json={**body, "model": "alpha"})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["text"] == "one two"
    assert result["logprobs"]["tokens"] == ["one", "two"]
    assert result["logprobs"]["text_offset"] == [0, 3]
    assert set(result["logprobs"]["content"][0]) == {"token", "token_id", "logprob", "bytes", "top_logprobs"}
    (request,) = farm.backends[0].requests
    assert request.sampling.top_a == 0.2 and request.sampling.banned_strings == ["three"]


@pytest.mark.parametrize(
    ("path", "body", "dialect"),
    [
        ("/v1/chat/completions", chat("x", min_p=2), "openai"),
        ("/v1/chat/completions", chat("x", top_k=2**63), "openai"),
        ("/v1/chat/completions", chat("x", mirostat_mode=5), "openai"),
        ("/v1/chat/completions", chat("x", dry_sequence_breakers=[""]), "openai"),
        ("/v1/chat/completions", chat("x", banned_tokens="a,b"), "openai"),
        ("/v1/chat/completions", chat("x", min_temp=2, max_temp=1), "openai"),
        ("/v1/chat/completions", chat("x", n=17), "openai"),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "logprobs": 6}, "openai"),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "max_tokens": 2**63}, "openai"),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "xtc_threshold": 2}, "openai"),
        ("/api/chat", {"model": "alpha", "messages": [], "options": {"mirostat": 9}}, "ollama"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "options": {"top_k": 2**63}}, "ollama"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "options": {"dry_base": -1}}, "ollama"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "top_logprobs": 21}, "ollama"),
        ("/api/v1/generate", {"prompt": "x", "tfs": 2}, "kobold"),
        ("/api/v1/generate", {"prompt": "x", "max_length": 2**63}, "kobold"),
        ("/api/v1/generate", {"prompt": "x", "sampler_order": [9]}, "kobold"),
        ("/api/v1/generate", {"prompt": "x", "custom_token_bans": "1,x"}, "kobold"),
        ("/api/v1/generate", {"prompt": "x", "logprobs": "yes"}, "kobold"),
    ],
)
async def test_bad_sampler_values_are_400s_in_each_dialects_shape(
    client: httpx.AsyncClient, farm: FakeFarm, path: str, body: dict[str, Any], dialect: str
) -> None:
    raw = json.dumps(body)  # (json: orjson refuses integers beyond 64 bits, which clients send)
    response = await client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_dialect_error(response, dialect, 400)
    assert all(not backend.requests for backend in farm.backends)  # refused before any engine saw it
