"""A request whose engine is gone before its first token runs once more on a fresh engine, on every dialect and
route; after the first token, or a second time, the client gets the error (with Retry-After). Also: a hung engine's
heartbeat, keep-alive comments on slow streams, and what the drain deadline does to requests still running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from somner.services import Services
from tests.api.conftest import running
from tests.fakes.backends import FakeFarm, SupervisedFake

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "one two three four"}]


@pytest.fixture
def farm() -> FakeFarm:
    return FakeFarm(supervised=True)


@pytest.fixture
async def app(tmp_path: Path, farm: FakeFarm) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    async with running(tmp_path, farm, stream_keepalive=0) as pair:
        yield pair


def model_status(services: Services, model: str = "alpha") -> Any:
    return {s.id: s for s in services.manager.statuses()}[model]


async def _chat(client: httpx.AsyncClient) -> str:
    reply = await client.post("/v1/chat/completions", json={"model": "alpha", "messages": HI})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["choices"][0]["message"]["content"])


async def _chat_stream(client: httpx.AsyncClient) -> str:
    reply = await client.post("/v1/chat/completions", json={"model": "alpha", "messages": HI, "stream": True})
    data = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]", data
    return "".join(orjson.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1])


async def _completions(client: httpx.AsyncClient) -> str:
    reply = await client.post("/v1/completions", json={"model": "alpha", "prompt": "one two three four"})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["choices"][0]["text"])


async def _ollama_stream(client: httpx.AsyncClient) -> str:
    reply = await client.post("/api/chat", json={"model": "alpha", "messages": HI})
    lines = [orjson.loads(line) for line in reply.text.splitlines()]
    assert lines[-1]["done"] is True, lines
    return "".join(line["message"]["content"] for line in lines)


async def _anthropic(client: httpx.AsyncClient) -> str:
    reply = await client.post("/v1/messages", json={"model": "alpha", "messages": HI, "max_tokens": 10})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["content"][0]["text"])


async def _responses_stream(client: httpx.AsyncClient) -> str:
    body = {"model": "alpha", "input": "one two three four", "stream": True}
    reply = await client.post("/v1/responses", json=body)
    assert "response.completed" in reply.text, reply.text
    return "one two three four"


async def _kobold(client: httpx.AsyncClient) -> str:
    reply = await client.post("/api/v1/generate", json={"model": "alpha", "prompt": "one two three four"})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["results"][0]["text"])


ROUTES = [_chat, _chat_stream, _completions, _ollama_stream, _anthropic, _responses_stream, _kobold]


@pytest.mark.parametrize("when", ["open", "early"])
@pytest.mark.parametrize("ask", ROUTES, ids=lambda f: f.__name__.strip("_"))
async def test_an_engine_gone_before_the_first_token_is_replaced_and_the_request_runs(
    app: tuple[Services, httpx.AsyncClient], farm: FakeFarm, when: str, ask: Any
) -> None:
    services, client = app
    expected = await ask(client)  # loads the model: engine 1
    farm.vanish = when
    assert await ask(client) == expected
    assert len(farm.backends) == 2 and farm.backends[0].stopped  # the lost engine was retired, once
    status = model_status(services)
    assert status.state.value == "loaded" and status.in_flight == 0 and status.loads == 2


async def test_embeddings_and_tokenizer_calls_are_retried_too(
    app: tuple[Services, httpx.AsyncClient], farm: FakeFarm
) -> None:
    services, client = app
    body = {"model": "alpha", "input": ["a", "bb"]}
    first = (await client.post("/v1/embeddings", json=body)).json()
    farm.vanish = "open"
    assert (await client.post("/v1/embeddings", json=body)).json()["data"] == first["data"]
    farm.vanish = "open"
    tokens = await client.post("/tokenize", json={"model": "alpha", "content": "a bb ccc"})
    assert tokens.status_code == 200 and tokens.json()["tokens"] == [1, 2, 3]
    farm.vanish = "open"
    counted = await client.post("/v1/messages/count_tokens", json={"model": "alpha", "messages": HI})
    assert counted.status_code == 200, counted.text
    assert model_status(services).loads == 4 and model_status(services).in_flight == 0


async def test_after_the_first_token_the_stream_ends_with_an_error_event(
    app: tuple[Services, httpx.AsyncClient], farm: FakeFarm
) -> None:
    services, client = app
    await _chat(client)
    farm.vanish = "midway"
    reply = await client.post("/v1/chat/completions", json={"model": "alpha", "messages": HI, "stream": True})
    data = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert '"error"' in data[-1] and "[DONE]" not in data
    contents = [orjson.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1] if '"choices"' in d]
    assert "".join(c or "" for c in contents) == "one two"  # no repeat: nothing was rerun after a token
    assert await _chat(client) == "one two three four"  # the next request gets a fresh engine
    assert model_status(services).loads == 2


async def test_a_second_lost_engine_is_an_error_with_retry_after(
    app: tuple[Services, httpx.AsyncClient], farm: FakeFarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, client = app
    await _chat(client)
    original = SupervisedFake.chat

    async def always_gone(self: SupervisedFake, request: Any) -> Any:
        farm.vanish = "open"
        return await original(self, request)

    monkeypatch.setattr(SupervisedFake, "chat", always_gone)
    reply = await client.post("/v1/chat/completions", json={"model": "alpha", "messages": HI})
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "engine_unreachable"
    assert int(reply.headers["retry-after"]) >= 1
    assert model_status(services).loads == 2  # the first engine and one fresh one: no more tries
    ollama = await client.post("/api/chat", json={"model": "alpha", "messages": HI, "stream": False})
    assert ollama.status_code == 502 and set(ollama.json()) == {"error"}
    assert int(ollama.headers["retry-after"]) >= 1
    assert model_status(services).loads == 4 and model_status(services).in_flight == 0


async def test_a_hung_engine_is_recycled_and_reported_meanwhile(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, engine={"hang_timeout": 0.4}, stream_keepalive=0.1) as (_, client):
        await _chat(client)
        engine = farm.backends[0]
        assert isinstance(engine, SupervisedFake)
        request = asyncio.create_task(
            client.post(
                "/v1/chat/completions",
                json={"model": "alpha", "messages": [{"role": "user", "content": "one two STALL"}], "stream": True},
            )
        )
        await asyncio.sleep(0.15)
        assert (await client.get("/ready")).status_code == 200  # busy, answering: fine
        engine.frozen = True
        reasons: list[str] = []
        health: list[dict[str, Any]] = []
        for _ in range(40):
            ready = await client.get("/ready")
            if ready.status_code == 503:
                reasons.extend(ready.json()["reasons"])
                reply = await client.get("/health")
                assert reply.status_code == 503
                health.append(reply.json())
            if engine.killed:
                break
            await asyncio.sleep(0.05)
        assert engine.killed, "the hung engine was not killed"
        assert any(reason.startswith("alpha: ") for reason in reasons), reasons
        assert health[0]["status"] == "degraded" and health[0]["models"]["alpha"]["health"] != "ok"
        reply = await asyncio.wait_for(request, 5)
        data = [line for line in reply.text.splitlines() if line.startswith("data: ")]
        assert '"error"' in data[-1]
        assert ": keep-alive" in reply.text.splitlines()  # the silent stream was kept alive
        assert await _chat(client) == "one two three four"
        assert len(farm.backends) == 2
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/health")).json()["models"]["alpha"]["health"] == "ok"


async def test_an_idle_engine_has_no_heartbeat_checks(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, engine={"hang_timeout": 0.2}) as (_, client):
        await _chat(client)
        engine = farm.backends[0]
        assert isinstance(engine, SupervisedFake)
        engine.frozen = True  # idle: nobody waits on it, so nobody asks
        await asyncio.sleep(0.5)
        assert engine.heartbeats == 0 and not engine.killed
        assert (await client.get("/ready")).status_code == 200


async def test_the_drain_deadline_ends_what_still_runs_with_the_dialects_error(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (services, client):
        hang = [{"role": "user", "content": "HANG"}]
        stream = asyncio.create_task(
            client.post("/v1/chat/completions", json={"model": "alpha", "messages": hang, "stream": True})
        )
        ollama = asyncio.create_task(client.post("/api/chat", json={"model": "alpha", "messages": hang}))
        whole = asyncio.create_task(
            client.post("/v1/messages", json={"model": "alpha", "messages": hang, "max_tokens": 5})
        )
        await asyncio.sleep(0.2)
        services.cut_off()
        replies = await asyncio.wait_for(asyncio.gather(stream, ollama, whole), 5)
        assert '"error"' in replies[0].text.splitlines()[-2] and "shutting down" in replies[0].text
        assert "[DONE]" not in replies[0].text
        assert "shutting down" in orjson.loads(replies[1].text.splitlines()[-1])["error"]
        assert replies[2].status_code == 503 and replies[2].json()["type"] == "error"
        assert "shutting down" in replies[2].json()["error"]["message"]
        assert model_status(services).in_flight == 0
