"""Every Kobold route and its error shape, over fake backends (default model `alpha`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from somner.core import CompletionRequest
from somner.services import Services
from tests.api.conftest import running
from tests.api.shapes import assert_dialect_error
from tests.api.test_gateway import make_key
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio


@pytest.fixture
async def kobold(tmp_path: Path, farm: FakeFarm) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    async with running(tmp_path, farm, model="alpha") as pair:
        yield pair


def headers_of(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def stream_events(body: bytes) -> list[tuple[str, Any]]:
    """(event name, data) of each SSE event."""
    out: list[tuple[str, Any]] = []
    for block in body.split(b"\n\n"):
        if not block:
            continue
        name_line, data_line = block.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: "), block
        out.append((name_line[7:].decode(), orjson.loads(data_line[6:])))
    return out


def last_completion(farm: FakeFarm) -> CompletionRequest:
    sent = farm.backends[0].requests[-1]
    assert isinstance(sent, CompletionRequest)
    return sent


def in_flight(services: Services) -> int:
    return sum(s.in_flight for s in services.manager.statuses())


async def test_what_the_server_is(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    assert (await client.get("/api/v1/model")).json() == {"result": "koboldcpp/alpha"}
    assert (await client.get("/api/v1/info/version")).json() == {"result": "1.2.5"}
    extra = (await client.get("/api/extra/version")).json()
    assert extra["result"] == "KoboldCpp" and extra["protected"] is True
    assert isinstance(extra["version"], str)
    assert (await client.get("/api/v1/config/max_context_length")).json() == {"value": 4096}
    assert (await client.get("/api/v1/config/max_length")).json() == {"value": 180}


async def test_configured_context_and_length(tmp_path: Path, farm: FakeFarm) -> None:
    settings: dict[str, Any] = {
        "model": "alpha",
        "models": [{"id": "alpha", "ctx": 512, "defaults": {"max_tokens": 64}}],
    }
    async with running(tmp_path, farm, **settings) as (_, client):
        assert (await client.get("/api/v1/config/max_context_length")).json() == {"value": 512}
        assert (await client.get("/api/v1/config/max_length")).json() == {"value": 64}
        await client.post("/api/v1/generate", json={"prompt": "a b"})
        assert last_completion(farm).sampling.max_tokens == 64


async def test_no_default_model_is_a_clear_400(client: httpx.AsyncClient) -> None:
    message = assert_dialect_error(await client.get("/api/v1/model"), "kobold", 400)
    assert "model" in message
    named = await client.post("/api/v1/generate", json={"prompt": "x y", "model": "beta"})
    assert named.json()["results"][0]["text"] == "x y"


async def test_generate(kobold: tuple[Services, httpx.AsyncClient], farm: FakeFarm) -> None:
    services, client = kobold
    response = await client.post(
        "/api/v1/generate",
        json={
            "prompt": "one two three",
            "max_length": 10,
            "temperature": 0.5,
            "top_k": 20,
            "typical": 0.9,
            "rep_pen": 1.2,
            "rep_pen_range": 64,
            "sampler_seed": 42,
            "stop_sequence": ["\n"],
            "grammar": "root ::= [a-z]+",
            "sampler_order": [6, 0, 1, 3, 4, 2, 5],  # front ends' extras: ignored
            "rep_pen_slope": 0.7,
        },
    )
    assert response.status_code == 200
    assert response.json() == {"results": [{"text": "one two three", "finish_reason": "stop"}]}
    sent = last_completion(farm)
    s = sent.sampling
    assert sent.prompt == "one two three"
    assert (s.max_tokens, s.temperature, s.top_k, s.typical_p, s.repeat_penalty, s.repeat_last_n) == (
        10,
        0.5,
        20,
        0.9,
        1.2,
        64,
    )
    assert (s.seed, s.stop, s.grammar) == (42, ["\n"], "root ::= [a-z]+")
    short = await client.post("/api/v1/generate", json={"prompt": "a b c d", "max_length": 2})
    assert short.json() == {"results": [{"text": "a b", "finish_reason": "length"}]}
    assert in_flight(services) == 0


async def test_prompt_is_cut_from_the_start_to_fit_the_context(
    kobold: tuple[Services, httpx.AsyncClient], farm: FakeFarm
) -> None:
    _, client = kobold
    words = [f"w{i}" for i in range(100)]  # the fake tokenizer: one token per word, id = its length
    body = {"prompt": " ".join(words), "memory": "MEM ", "max_context_length": 40, "max_length": 5}
    response = await client.post("/api/v1/generate", json=body)
    assert response.status_code == 200
    sent = last_completion(farm)
    assert sent.sampling.max_tokens == 5
    assert sent.prompt == [3, *[len(w) for w in words[-(40 - 5 - 1) :]]]  # the memory, then the latest words
    # max_length is capped so that the prompt keeps room; a prompt that fits is sent as text
    await client.post(
        "/api/v1/generate", json={"prompt": "a b", "memory": "m ", "max_context_length": 20, "max_length": 50}
    )
    sent = last_completion(farm)
    assert sent.prompt == "m a b" and sent.sampling.max_tokens == 4


async def test_stream(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    services, client = kobold
    response = await client.post("/api/extra/generate/stream", json={"prompt": "x y z", "max_length": 2})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = stream_events(response.content)
    assert all(name == "message" for name, _ in events)
    assert "".join(data["token"] for _, data in events) == "x y"
    assert [data["finish_reason"] for _, data in events] == [None, None, "length"]
    assert in_flight(services) == 0


async def test_failure_mid_stream_ends_with_an_error_event(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    services, client = kobold
    response = await client.post("/api/extra/generate/stream", json={"prompt": "a b FAIL_MIDWAY d"})
    events = stream_events(response.content)
    assert "".join(data["token"] for name, data in events if name == "message") == "a b"
    assert events[-1] == ("error", {"detail": {"msg": "the fake engine crashed", "type": "engine_error"}})
    assert in_flight(services) == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{oops", 400),
        (b"[]", 400),
        (orjson.dumps({"max_length": 5}), 400),  # no prompt
        (orjson.dumps({"prompt": ["a"]}), 400),
        (orjson.dumps({"prompt": "x", "max_length": "80"}), 400),
        (orjson.dumps({"prompt": "x", "temperature": "warm"}), 400),
        (orjson.dumps({"prompt": "x", "stop_sequence": [1]}), 400),
        (orjson.dumps({"prompt": "x", "grammar": {"root": "a"}}), 400),
        (orjson.dumps({"prompt": "x", "sampler_seed": "random"}), 400),
        (orjson.dumps({"prompt": "x", "model": "gamma"}), 404),
        (orjson.dumps({"prompt": "CONTEXT"}), 400),
        (orjson.dumps({"prompt": "FAIL_BEFORE"}), 502),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/generate", "/api/extra/generate/stream"])
async def test_bad_generations(kobold: tuple[Services, httpx.AsyncClient], path: str, body: bytes, status: int) -> None:
    services, client = kobold
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert_dialect_error(response, "kobold", status)
    assert in_flight(services) == 0
    assert len(services.generations) == 0
    assert (await client.post(path, json={"prompt": "still serving"})).status_code == 200


async def test_internal_errors_hide_details(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    response = await client.post("/api/v1/generate", json={"prompt": "BOOM"}, headers={"x-request-id": "req-k"})
    message = assert_dialect_error(response, "kobold", 500)
    assert "req-k" in message and "secret" not in response.text


async def test_tokencount_matches_tokenize(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    text = "count these four words"
    counted = (await client.post("/api/extra/tokencount", json={"prompt": text})).json()
    tokens = (await client.post("/tokenize", json={"content": text, "add_special": True})).json()["tokens"]
    assert counted == {"value": len(tokens), "ids": tokens} and counted["value"] == 4
    plain = (await client.post("/api/extra/tokencount", json={"prompt": text, "special": False})).json()
    assert plain["ids"] == (await client.post("/tokenize", json={"content": text})).json()["tokens"]
    assert_dialect_error(await client.post("/api/extra/tokencount", json={"prompt": 4}), "kobold", 400)
    assert_dialect_error(await client.post("/api/extra/tokencount", json={}), "kobold", 400)
    assert_dialect_error(
        await client.post("/api/extra/tokencount", json={"prompt": "x", "model": "gamma"}), "kobold", 404
    )


async def test_auth_applies(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    for headers in ({"authorization": ""}, headers_of("sk-somner-wrong")):
        for method, path in (("GET", "/api/v1/model"), ("POST", "/api/v1/generate"), ("POST", "/api/extra/abort")):
            response = await client.request(method, path, json={"prompt": "x"}, headers=headers)
            assert_dialect_error(response, "kobold", 401)


async def test_rate_limit_applies(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    key = await make_key(client, rpm=1)
    first = await client.post("/api/v1/generate", json={"prompt": "a"}, headers=headers_of(key))
    assert first.status_code == 200
    second = await client.post("/api/extra/generate/stream", json={"prompt": "a"}, headers=headers_of(key))
    assert_dialect_error(second, "kobold", 429)
    assert int(second.headers["retry-after"]) >= 1
    # abort and check are control requests: they spend no rate limit
    assert (await client.post("/api/extra/abort", headers=headers_of(key))).json() == {"success": False}


async def _partial(client: httpx.AsyncClient, key: str, genkey: str) -> str:
    response = await client.post("/api/extra/generate/check", json={"genkey": genkey}, headers=headers_of(key))
    return str(response.json()["results"][0]["text"])


async def _wait_for_text(client: httpx.AsyncClient, key: str, genkey: str) -> str:
    for _ in range(200):
        text = await _partial(client, key, genkey)
        if text:
            return text
        await asyncio.sleep(0.01)
    raise AssertionError("the generation produced no text")


@pytest.mark.parametrize("path", ["/api/extra/generate/stream", "/api/v1/generate"])
async def test_abort_reaches_only_the_callers_generation(kobold: tuple[Services, httpx.AsyncClient], path: str) -> None:
    services, client = kobold
    alice, bob = await make_key(client, user="alice"), await make_key(client, user="bob")
    words = " ".join(f"w{i}" for i in range(200))
    body = {"prompt": f"SLOW {words}", "max_length": 200, "genkey": "KCPP1"}
    running_one = asyncio.create_task(client.post(path, json=body, headers=headers_of(alice)))
    partial = await _wait_for_text(client, alice, "KCPP1")
    assert partial.startswith("SLOW")
    # bob sees nothing of it and cannot stop it, even with its genkey
    assert await _partial(client, bob, "KCPP1") == ""
    refused = await client.post("/api/extra/abort", json={"genkey": "KCPP1"}, headers=headers_of(bob))
    assert refused.json() == {"success": False}
    await asyncio.sleep(0.15)
    assert not running_one.done()
    # alice can: the generation ends at once with the text so far
    aborted = await client.post("/api/extra/abort", json={"genkey": "KCPP1"}, headers=headers_of(alice))
    assert aborted.json() == {"success": True}
    response = await asyncio.wait_for(running_one, 2.0)
    assert response.status_code == 200
    if path.endswith("stream"):
        events = stream_events(response.content)
        text = "".join(data["token"] for _, data in events)
        assert events[-1][1]["finish_reason"] == "abort"
    else:
        result = response.json()["results"][0]
        text, finish = result["text"], result["finish_reason"]
        assert finish == "abort"
    assert text.startswith("SLOW") and 1 < len(text.split()) < 100
    assert in_flight(services) == 0 and len(services.generations) == 0
    assert await _partial(client, alice, "KCPP1") == ""


async def test_abort_while_queued_ends_the_generation_without_text(tmp_path: Path, farm: FakeFarm) -> None:
    settings: dict[str, Any] = {"model": "alpha", "limits": {"max_concurrent": 1, "max_queue": 4}}
    async with running(tmp_path, farm, **settings) as (services, client):
        blocker = asyncio.create_task(client.post("/api/v1/generate", json={"prompt": "SLOW " * 10}))
        for _ in range(250):  # (the blocker holds the one slot before the next request comes)
            if in_flight(services) == 1:
                break
            await asyncio.sleep(0.02)
        queued = asyncio.create_task(client.post("/api/v1/generate", json={"prompt": "a b c", "genkey": "Q"}))
        for _ in range(250):  # (abort finds nothing until the queued request has registered its genkey)
            aborted = (await client.post("/api/extra/abort", json={"genkey": "Q"})).json()
            if aborted["success"]:
                break
            await asyncio.sleep(0.02)
        assert aborted == {"success": True}
        assert (await queued).json() == {"results": [{"text": "", "finish_reason": "abort"}]}
        assert (await blocker).json()["results"][0]["finish_reason"] == "stop"
        assert in_flight(services) == 0


async def test_abort_and_check_accept_no_body(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    assert (await client.post("/api/extra/abort")).json() == {"success": False}
    assert (await client.post("/api/extra/generate/check")).json() == {"results": [{"text": ""}]}
    assert (await client.get("/api/extra/generate/check")).json() == {"results": [{"text": ""}]}
    assert_dialect_error(await client.post("/api/extra/abort", json={"genkey": 1}), "kobold", 400)
