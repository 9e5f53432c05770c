"""LoRA adapters on the real engine, through the gateway over HTTP: an adapter built for the default model (random
low-rank weights) changes the output at a non-zero scale, scale 0 gives exactly the base output, requests with
different scales share one engine (each gets what it gets alone), and unloading the adapter restores the base."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from somner.settings import Settings
from tests.conftest import link_model
from tests.fakes.lora_files import make_lora
from tests.inprocess import NO_AUTH, ThreadedGateway

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ThreadedGateway]:
    data = tmp_path_factory.mktemp("lora") / "data"
    link_model(model_path, data / "models")
    make_lora(model_path, data / "loras" / "style.gguf", strength=0.08)
    make_lora(model_path, data / "loras" / "other.gguf", strength=0.08, seed=7)
    settings = Settings(data_dir=data, model=MODEL, engine={"ctx": 512, "parallel": 4, "threads": 2}, auth=NO_AUTH)  # type: ignore[arg-type]
    with ThreadedGateway(settings) as running:
        yield running


def complete(client: httpx.Client, **extra: Any) -> str:
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 16, "temperature": 0, **extra}
    reply = client.post("/v1/completions", json=body)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["choices"][0]["text"])


def test_scales_loading_sharing_and_unloading(gateway: ThreadedGateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        base = complete(client)
        loaded = client.post("/v1/lora/load", json={"loras": [{"name": "style", "scaling": 1.0}, {"name": "other"}]})
        assert loaded.json() == {"success": ["style", "other"], "failure": []}
        adapted = complete(client)
        assert adapted != base
        assert complete(client, lora=[{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]) == base
        assert complete(client, lora=[{"name": "style", "scale": 0.0}]) == base  # (unlisted adapters: 0)
        style_only = complete(client, lora=[{"name": "style", "scale": 1.0}])
        assert style_only not in (base, adapted)
        assert complete(client, loras=[{"id": 0, "scale": 1.0}]) == style_only  # (TabbyAPI's plural too)

        # Different scales at the same time share the engine, taking turns: each gets what it gets alone.
        results: dict[str, str] = {}
        asks = {
            "base": {"lora": [{"id": 0, "scale": 0.0}]},
            "style": {"lora": [{"name": "style", "scale": 1.0}]},
            "both": {},
        }

        def ask(name: str, extra: dict[str, Any]) -> None:
            with httpx.Client(base_url=gateway.url, timeout=120) as own:
                results[name] = complete(own, **extra)

        threads = [threading.Thread(target=ask, args=item) for item in asks.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {"base": base, "style": style_only, "both": adapted}
        status = {s.id: s for s in gateway.services.manager.statuses()}[MODEL]
        assert status.loads == 2  # the start, and the reload with the adapters: one engine served all three

        for bad in (
            [{"id": 5, "scale": 1.0}],
            [{"name": "nothing", "scale": 1.0}],
            [{"id": 0, "name": "style", "scale": 1.0}],
            [{"scale": 1.0}],
            [{"id": 0, "scale": 1000}],
            [{"id": -1}],
            "style",
        ):
            body = {"model": MODEL, "prompt": "x", "max_tokens": 1, "lora": bad}
            reply = client.post("/v1/completions", json=body)
            assert reply.status_code == 400, (bad, reply.text)
            assert reply.json()["error"]["param"].startswith("lora"), reply.text

        assert client.post("/v1/lora/unload").json() is None
        assert complete(client) == base
        assert client.get("/v1/lora").json()["data"] == []
