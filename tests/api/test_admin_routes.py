"""Model management over HTTP (fake backends): /admin/models, load, unload, /status, /unload, keep_alive."""

from __future__ import annotations

import httpx
import pytest

from somner.services import Services
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio


async def test_load_unload_and_listing(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    models = (await client.get("/admin/models")).json()["data"]
    assert [(m["id"], m["state"], m["backend"]) for m in models] == [
        ("alpha", "unloaded", "worker"),
        ("beta", "unloaded", "worker"),
    ]
    loaded = (await client.post("/admin/models/alpha/load")).json()
    assert loaded["state"] == "loaded"
    assert loaded["loads"] == 1
    assert loaded["loaded_at"] > 1_700_000_000  # a Unix time
    status = (await client.get("/status")).json()
    assert status["loaded"] == ["alpha"]
    unloaded = (await client.post("/admin/models/alpha/unload")).json()
    assert unloaded["state"] == "unloaded"
    assert farm.backends[0].stopped
    missing = await client.post("/admin/models/nope/load")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_unload_all(client: httpx.AsyncClient) -> None:
    await client.post("/admin/models/alpha/load")
    await client.post("/admin/models/beta/load")
    assert sorted((await client.post("/unload")).json()["unloaded"]) == ["alpha", "beta"]
    assert (await client.get("/status")).json()["loaded"] == []


def chat(**extra: object) -> dict[str, object]:
    return {"model": "alpha", "messages": [{"role": "user", "content": "x y"}], **extra}


async def test_keep_alive_in_body_and_header(client: httpx.AsyncClient, services: Services) -> None:
    await client.post("/v1/chat/completions", json=chat(keep_alive=-1))
    assert {s.id: s for s in services.manager.statuses()}["alpha"].expires_at == float("inf")
    await client.post("/v1/chat/completions", json=chat(), headers={"x-somner-keep-alive": "0"})
    assert await services.manager.reap() == ["alpha"]
    await client.post("/v1/chat/completions", json=chat(keep_alive="10m"), headers={"x-somner-keep-alive": "0"})
    assert await services.manager.reap() == []  # the body wins


@pytest.mark.parametrize(("body", "headers"), [({"keep_alive": "soon"}, {}), ({}, {"x-somner-keep-alive": "1x"})])
async def test_bad_keep_alive_is_a_400(
    client: httpx.AsyncClient, farm: FakeFarm, body: dict[str, object], headers: dict[str, str]
) -> None:
    response = await client.post("/v1/chat/completions", json=chat(**body), headers=headers)
    assert response.status_code == 400
    assert "keep" in response.json()["error"]["message"].lower()
    assert farm.starts == 0
