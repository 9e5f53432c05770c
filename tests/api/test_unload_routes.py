"""Unloading: `keep_alive: 0` (body or `X-Somner-Keep-Alive`) stops the model's engine right after the request on
every dialect, streamed or not; `/unload` by GET as llama-swap serves it; the methods Ollama's probes use."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from somner.services import Services
from tests.api.conftest import running
from tests.api.shapes import assert_dialect_error
from tests.api.test_gateway import make_key
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

CHAT = [{"role": "user", "content": "x y"}]
ZERO = {"x-somner-keep-alive": "0"}

REQUESTS: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("/v1/chat/completions", {"messages": CHAT, "keep_alive": 0}, {}),
    ("/v1/chat/completions", {"messages": CHAT, "keep_alive": "0s", "stream": True}, {}),
    ("/v1/completions", {"prompt": "x y", "keep_alive": 0}, {}),
    ("/v1/completions", {"prompt": "x y", "stream": True}, ZERO),
    ("/v1/embeddings", {"input": "x y", "keep_alive": 0}, {}),
    ("/v1/responses", {"input": "x y", "keep_alive": 0}, {}),
    ("/api/chat", {"messages": CHAT, "keep_alive": 0, "stream": False}, {}),
    ("/api/chat", {"messages": CHAT, "keep_alive": 0}, {}),
    ("/api/generate", {"prompt": "x y", "keep_alive": "0"}, {}),
    ("/api/embed", {"input": "x y", "keep_alive": 0}, {}),
    ("/v1/messages", {"messages": CHAT, "max_tokens": 8}, ZERO),
    ("/v1/messages", {"messages": CHAT, "max_tokens": 8, "stream": True}, ZERO),
    ("/api/v1/generate", {"prompt": "x y"}, ZERO),
    ("/api/extra/generate/stream", {"prompt": "x y"}, ZERO),
]


async def _stopped_soon(services: Services, farm: FakeFarm) -> bool:
    for _ in range(100):  # the reaper runs as soon as the lease is released: a few event-loop turns
        if farm.backends[-1].stopped and services.manager.state("alpha").value == "unloaded":
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.parametrize(("path", "body", "headers"), REQUESTS)
async def test_keep_alive_zero_unloads_right_after_the_request(
    tmp_path: Path, farm: FakeFarm, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    async with running(tmp_path, farm, model="alpha", ttl="1h") as (services, client):
        await services.manager.load("alpha")
        response = await client.post(path, json={"model": "alpha", **body}, headers=headers)
        assert response.status_code == 200, response.text
        assert await _stopped_soon(services, farm), f"{path} left the model loaded"
        assert farm.starts == 1


async def test_without_keep_alive_the_ttl_applies(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, model="alpha", ttl="1h") as (services, client):
        for path, body in (("/api/v1/generate", {"prompt": "x"}), ("/v1/messages", {"messages": CHAT})):
            assert (await client.post(path, json={"model": "alpha", "max_tokens": 4, **body})).status_code == 200
        await asyncio.sleep(0.1)
        assert services.manager.state("alpha").value == "loaded" and not farm.backends[0].stopped


async def test_a_bad_keep_alive_header_is_a_400_in_each_dialect(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, model="alpha") as (services, client):
        bad = {"x-somner-keep-alive": "soon"}
        kobold = await client.post("/api/v1/generate", json={"prompt": "x"}, headers=bad)
        assert "keep" in assert_dialect_error(kobold, "kobold", 400).lower()
        anthropic = await client.post(
            "/v1/messages", json={"model": "alpha", "messages": CHAT, "max_tokens": 4}, headers=bad
        )
        assert "keep" in assert_dialect_error(anthropic, "anthropic", 400).lower()
        assert len(services.generations) == 0 and sum(s.in_flight for s in services.manager.statuses()) == 0


async def test_unload_by_get_as_llama_swap(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (services, client):
        await services.manager.load("alpha")
        await services.manager.load("beta")
        # HEAD (which Starlette adds to GET routes) must not unload anything
        assert (await client.head("/unload")).status_code == 405
        assert services.manager.state("alpha").value == "loaded"
        answer = await client.get("/unload")
        assert answer.status_code == 200 and sorted(answer.json()["unloaded"]) == ["alpha", "beta"]
        assert all(b.stopped for b in farm.backends)
        assert (await client.get("/unload")).json() == {"unloaded": []}
        user = await make_key(client, user="carol")
        refused = await client.get("/unload", headers={"authorization": f"Bearer {user}"})
        assert_dialect_error(refused, "openai", 403)
        assert_dialect_error(await client.get("/unload", headers={"authorization": ""}), "openai", 401)
        assert_dialect_error(await client.delete("/unload"), "openai", 405)


async def test_ollama_methods_as_ollama_accepts_them(tmp_path: Path, farm: FakeFarm) -> None:
    """Ollama answers HEAD on `/`, `/api/version` and `/api/tags`, and only POST on `/api/show` (405 otherwise)."""
    async with running(tmp_path, farm) as (_, client):
        for path in ("/", "/api/version", "/api/tags"):
            head = await client.head(path)
            assert head.status_code == 200 and head.content == b"", path
        assert_dialect_error(await client.get("/api/show"), "ollama", 405)
        shown = await client.post("/api/show", json={"model": "alpha"})
        assert shown.status_code == 200 and "capabilities" in shown.json()
        assert_dialect_error(await client.post("/api/show", json={"model": 3}), "ollama", 400)
        assert_dialect_error(await client.post("/api/show", json={"model": "gamma"}), "ollama", 404)
