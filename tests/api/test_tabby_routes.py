"""TabbyAPI's own routes over fake engines: shapes, status codes, auth as TabbyAPI clients send it, and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from somner.services import Services
from tests.api.conftest import ADMIN_KEY, running
from tests.fakes.backends import FakeFarm
from tests.fakes.gguf_files import make_gguf

pytestmark = pytest.mark.anyio

ADAPTER = {"general.type": "adapter", "adapter.type": "lora"}


@pytest.fixture
async def app(tmp_path: Path, farm: FakeFarm) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    data = tmp_path / "data"
    (data / "templates").mkdir(parents=True)
    (data / "templates" / "alpaca.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    (data / "loras").mkdir()
    (data / "loras" / "style.gguf").write_bytes(make_gguf([4], strings=ADAPTER))
    (data / "loras" / "not-an-adapter.gguf").write_bytes(make_gguf([4]))
    async with running(tmp_path, farm) as pair:
        yield pair


async def user_key(client: httpx.AsyncClient, **rights: Any) -> str:
    reply = await client.post("/admin/keys", json={"user": "someone", **rights})
    assert reply.status_code in (200, 201), reply.text
    return str(reply.json()["key"])


def sse(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def spec_of(farm: FakeFarm, model: str) -> Any:
    return [b.spec for b in farm.backends if b.spec.id == model][-1]


async def test_the_model_card_is_the_loaded_model_with_its_parameters(app: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = app
    none = await client.get("/v1/model")
    assert none.status_code == 503 and none.json() == {"detail": "No models are currently loaded."}
    assert (await client.post("/v1/completions", json={"model": "beta", "prompt": "hi"})).status_code == 200
    card = (await client.get("/v1/model")).json()
    assert card["id"] == "beta" and card["object"] == "model" and card["owned_by"] == "somner"
    parameters = card["parameters"]
    assert set(parameters) >= {"max_seq_len", "cache_size", "cache_mode", "max_batch_size", "prompt_template", "draft"}
    assert parameters["cache_mode"] == "FP16" and parameters["max_batch_size"] == 4
    assert parameters["cache_size"] == parameters["max_seq_len"] * 4
    assert (await client.get("/v1/model", params={"model": "ALPHA"})).json()["id"] == "alpha"  # extension


async def test_model_and_draft_lists(app: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = app
    listed = (await client.get("/v1/model/list")).json()
    assert listed["object"] == "list" and [c["id"] for c in listed["data"]] == ["alpha", "beta"]
    assert [c["id"] for c in (await client.get("/v1/model/draft/list")).json()["data"]] == ["alpha", "beta"]
    limited = {"authorization": f"Bearer {await user_key(client, models=['beta'])}"}
    assert [c["id"] for c in (await client.get("/v1/model/list", headers=limited)).json()["data"]] == ["beta"]
    assert (await client.get("/v1/model/draft/list", headers=limited)).json()["data"] == []


async def test_load_streams_progress_and_applies_its_options(
    app: tuple[Services, httpx.AsyncClient], farm: FakeFarm
) -> None:
    services, client = app
    body = {"model_name": "beta", "max_seq_len": 2048, "cache_mode": "Q8", "max_batch_size": 2, "chunk_size": 256}
    reply = await client.post("/v1/model/load", json=body)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = sse(reply.text)
    assert events[-1] == {
        "model_type": "model",
        "module": events[-1]["modules"],
        "modules": events[-1]["modules"],
        "status": "finished",
    }
    assert all(e["status"] == "processing" for e in events[:-1])
    spec = spec_of(farm, "beta")
    assert (spec.ctx, spec.parallel, spec.entry.cache_type, spec.batch) == (2048, 2, "q8_0", 256)
    card = (await client.get("/v1/model", params={"model": "beta"})).json()["parameters"]
    assert (card["max_seq_len"], card["cache_mode"], card["max_batch_size"], card["cache_size"]) == (
        2048,
        "Q8",
        2,
        4096,
    )
    # The same options again: nothing to do; other options: the model is reloaded with them.
    await client.post("/v1/model/load", json={**body, "stream": False})
    assert farm.starts == 1
    again = await client.post(
        "/v1/model/load", json={"model_name": "beta", "cache_size": 4096, "max_seq_len": 1024, "stream": False}
    )
    assert again.json() == {"model_type": "model", "module": 100, "modules": 100, "status": "finished"}
    assert farm.starts == 2 and spec_of(farm, "beta").parallel == 4
    assert services.manager.state("beta").value == "loaded"


async def test_load_failures_and_bad_options(app: tuple[Services, httpx.AsyncClient], farm: FakeFarm) -> None:
    _, client = app
    for body, status in (
        ({}, 400),
        ({"model_name": ""}, 400),
        ({"model_name": "gamma"}, 400),
        ({"model_name": "beta", "max_seq_len": "long"}, 400),
        ({"model_name": "beta", "cache_mode": "Q6"}, 400),
        ({"model_name": "beta", "max_batch_size": 0}, 400),
        ({"model_name": "beta", "draft_model": {"draft_model_name": "nothing"}}, 400),
    ):
        reply = await client.post("/v1/model/load", json=body)
        assert reply.status_code == status, (body, reply.text)
        assert set(reply.json()) == {"detail"} and reply.json()["detail"]
    farm.fail_loads("the file is broken")
    events = sse((await client.post("/v1/model/load", json={"model_name": "alpha"})).text)
    assert events[-1] == {"error": {"message": "the file is broken", "trace": None}}


async def test_unload(app: tuple[Services, httpx.AsyncClient]) -> None:
    services, client = app
    assert (await client.post("/v1/model/unload")).status_code == 503
    await client.post("/v1/model/load", json={"model_name": "alpha", "stream": False})
    await client.post("/v1/model/load", json={"model_name": "beta", "stream": False})
    reply = await client.post("/v1/model/unload", json={"model": "alpha"})
    assert reply.status_code == 200 and reply.json() is None
    assert services.manager.state("alpha").value == "unloaded" and services.manager.state("beta").value == "loaded"
    assert (await client.post("/v1/model/unload")).json() is None
    assert services.manager.state("beta").value == "unloaded"


async def test_auth_as_tabby_clients_send_it(app: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = app
    user = await user_key(client)
    for headers, permission in (
        ({"x-api-key": user}, "api"),
        ({"x-api-key": ADMIN_KEY}, "admin"),
        ({"x-admin-key": ADMIN_KEY}, "admin"),
        ({"x-admin-key": ADMIN_KEY, "x-api-key": user}, "admin"),
        ({"authorization": f"Bearer {user}"}, "api"),
    ):
        reply = await client.get("/v1/auth/permission", headers={"authorization": "", **headers})
        assert reply.json() == {"permission": permission}, headers
    missing = await client.get("/v1/model/list", headers={"authorization": ""})
    assert missing.status_code == 401 and set(missing.json()) == {"detail"}
    refused = await client.post(
        "/v1/model/load", json={"model_name": "alpha"}, headers={"authorization": "", "x-api-key": user}
    )
    assert refused.status_code == 401 and refused.json() == {"detail": "Invalid admin key"}
    for path in ("/v1/model/unload", "/v1/lora/load", "/v1/template/switch", "/v1/template/unload", "/v1/lora/unload"):
        assert (await client.post(path, json={}, headers={"authorization": f"Bearer {user}"})).status_code == 401, path
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "", "x-api-key": user},
    )
    assert chat.status_code == 200  # a client that sends only x-api-key is let in


async def test_health(app: tuple[Services, httpx.AsyncClient], farm: FakeFarm) -> None:
    _, client = app
    reply = await client.get("/v1/health", headers={"authorization": ""})  # no key, as TabbyAPI's
    assert reply.status_code == 200 and reply.json() == {"status": "healthy", "issues": []}
    farm.fail_loads("the file is broken")
    await client.post("/v1/completions", json={"model": "alpha", "prompt": "hi"})
    failed = await client.get("/v1/health")
    assert failed.status_code == 503 and failed.json()["status"] == "unhealthy"
    assert "the file is broken" in failed.json()["issues"][0]["description"]


async def test_templates(app: tuple[Services, httpx.AsyncClient], farm: FakeFarm, tmp_path: Path) -> None:
    services, client = app
    names = (await client.get("/v1/template/list")).json()
    assert names["object"] == "list" and names["data"][0] == "alpaca" and "chatml" in names["data"]
    await client.post("/v1/model/load", json={"model_name": "alpha", "stream": False})
    assert (await client.post("/v1/template/switch", json={"prompt_template_name": "alpaca"})).json() is None
    assert spec_of(farm, "alpha").entry.template == str(tmp_path / "data" / "templates" / "alpaca.jinja")
    card = (await client.get("/v1/model")).json()["parameters"]
    assert card["prompt_template"] == "alpaca"
    user = {"authorization": f"Bearer {await user_key(client)}"}
    assert (await client.get("/v1/template/list", headers=user)).json()["data"] == ["alpaca"]
    assert (await client.post("/v1/template/switch", json={"name": "chatml"})).status_code == 200
    assert spec_of(farm, "alpha").entry.template == "chatml"
    for bad in ({"prompt_template_name": "nope"}, {"prompt_template_name": "../secret"}, {}):
        reply = await client.post("/v1/template/switch", json=bad)
        assert reply.status_code == 400 and set(reply.json()) == {"detail"}, bad
    assert (await client.post("/v1/template/unload")).json() is None
    assert spec_of(farm, "alpha").entry.template is None and len(farm.backends) == 4
    assert services.manager.state("alpha").value == "loaded"


async def test_loras(app: tuple[Services, httpx.AsyncClient], farm: FakeFarm, tmp_path: Path) -> None:
    _, client = app
    listed = (await client.get("/v1/lora/list")).json()
    assert [c["id"] for c in listed["data"]] == ["not-an-adapter", "style"]
    assert (await client.get("/v1/lora")).status_code == 503  # no model loaded
    await client.post("/v1/model/load", json={"model_name": "alpha", "stream": False})
    reply = await client.post(
        "/v1/lora/load", json={"loras": [{"name": "style", "scaling": 0.5}, {"name": "not-an-adapter"}, {"name": "x"}]}
    )
    assert reply.json() == {"success": ["style"], "failure": ["not-an-adapter", "x"]}
    loras = spec_of(farm, "alpha").entry.loras
    assert [(lora.path, lora.scale) for lora in loras] == [(tmp_path / "data" / "loras" / "style.gguf", 0.5)]
    active = (await client.get("/v1/lora")).json()["data"]
    assert [(c["id"], c["object"], c["scaling"]) for c in active] == [("style", "lora", 0.5)]
    assert (await client.post("/v1/lora/load", json={"loras": []})).status_code == 400
    assert (await client.post("/v1/lora/load", json={"loras": [{"name": "style", "scaling": -1}]})).status_code == 400
    assert (await client.post("/v1/lora/unload")).json() is None
    assert spec_of(farm, "alpha").entry.loras == []


async def test_tokens(app: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = app
    await client.post("/v1/model/load", json={"model_name": "alpha", "stream": False})
    encoded = (await client.post("/v1/token/encode", json={"text": "a bb ccc"})).json()
    assert encoded == {"tokens": [1, 2, 3], "length": 3}
    chat = await client.post("/v1/token/encode", json={"text": [{"role": "user", "content": "hello there"}]})
    assert chat.json() == {"tokens": [5, 5, 5], "length": 3}  # "user: hello there" through the fake's template
    decoded = (await client.post("/v1/token/decode", json={"tokens": [1, 2]})).json()
    assert decoded == {"text": "x xx"}
    for path, bad in (
        ("/v1/token/encode", {}),
        ("/v1/token/encode", {"text": 5}),
        ("/v1/token/decode", {"tokens": ["a"]}),
        ("/v1/token/decode", {"tokens": [-1]}),
    ):
        reply = await client.post(path, json=bad)
        assert reply.status_code == 400 and set(reply.json()) == {"detail"}, bad
