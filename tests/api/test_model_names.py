"""Model names as clients write them, on every dialect: Ollama's `:latest` tag, any letter case, and aliases
resolve to the same model; a name that only letter case could tell apart is a 400 listing the candidates; an
unknown name keeps each dialect's 404."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from somner.services import Services
from tests.api.conftest import running
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi there"}]
Ask = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


async def openai_chat(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"model": name, "messages": HI})


async def openai_stream(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"model": name, "messages": HI, "stream": True})


async def openai_completion(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/v1/completions", json={"model": name, "prompt": "hi there"})


async def openai_embedding(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/v1/embeddings", json={"model": name, "input": "hi"})


async def openai_model(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.get(f"/v1/models/{name}")


async def responses(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/v1/responses", json={"model": name, "input": "hi there"})


async def tokenize(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/tokenize", json={"model": name, "content": "hi there"})


async def anthropic(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/v1/messages", json={"model": name, "messages": HI, "max_tokens": 5})


async def anthropic_count(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/v1/messages/count_tokens", json={"model": name, "messages": HI})


async def ollama_chat(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/api/chat", json={"model": name, "messages": HI, "stream": False})


async def ollama_generate(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/api/generate", json={"model": name, "prompt": "hi there", "stream": False})


async def ollama_embed(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/api/embed", json={"model": name, "input": "hi"})


async def ollama_show(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/api/show", json={"model": name})


async def kobold(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/api/v1/generate", json={"model": name, "prompt": "hi there", "max_length": 3})


ROUTES: list[Ask] = [
    openai_chat,
    openai_stream,
    openai_completion,
    openai_embedding,
    openai_model,
    responses,
    tokenize,
    anthropic,
    anthropic_count,
    ollama_chat,
    ollama_generate,
    ollama_embed,
    ollama_show,
    kobold,
]
OLLAMA = {ollama_chat, ollama_generate, ollama_embed, ollama_show}
ANTHROPIC = {anthropic, anthropic_count}
KOBOLD = {kobold}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    (models / "Beta.gguf").write_bytes(b"GGUF")  # beside `beta`: only letter case tells them apart
    entries = [{"id": "alpha", "aliases": ["my-chat"]}]
    async with running(tmp_path, FakeFarm(), models=entries) as pair:
        yield pair


def alpha_served(services: Services) -> int:
    return {s.id: s for s in services.manager.statuses()}["alpha"].loads


@pytest.mark.parametrize("ask", ROUTES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", ["alpha", "alpha:latest", "ALPHA", "Alpha:Latest", "my-chat", "MY-CHAT:latest"])
async def test_every_way_of_writing_a_name_reaches_the_model(
    app: tuple[Services, httpx.AsyncClient], ask: Ask, name: str
) -> None:
    services, client = app
    reply = await ask(client, name)
    assert reply.status_code == 200, reply.text
    if ask not in (openai_model, ollama_show):
        assert alpha_served(services) == 1  # it was alpha's engine that answered


@pytest.mark.parametrize("ask", ROUTES, ids=lambda f: f.__name__)
async def test_a_name_only_letter_case_tells_apart_is_a_400_naming_both(
    app: tuple[Services, httpx.AsyncClient], ask: Ask
) -> None:
    _, client = app
    reply = await ask(client, "BETA")
    assert reply.status_code == 400, reply.text
    body = reply.json()
    if ask in OLLAMA:
        message = body["error"]
    elif ask in KOBOLD:
        message = body["detail"]["msg"]
    else:
        message = body["error"]["message"]
    assert "'Beta', 'beta'" in message and "ambiguous" in message
    assert (await ask(client, "Beta")).status_code == 200  # written exactly, each is its own model
    assert (await ask(client, "beta:latest")).status_code == 200


@pytest.mark.parametrize("ask", ROUTES, ids=lambda f: f.__name__)
async def test_unknown_names_keep_each_dialects_404(app: tuple[Services, httpx.AsyncClient], ask: Ask) -> None:
    _, client = app
    reply = await ask(client, "gamma:latest")
    assert reply.status_code == 404, reply.text
    body = reply.json()
    if ask in OLLAMA:
        assert set(body) == {"error"}
    elif ask in ANTHROPIC:
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    elif ask in KOBOLD:
        assert "msg" in body["detail"]
    else:
        assert body["error"]["code"] == "model_not_found"
