"""Health, readiness, the health port and Prometheus metrics, over fake backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from somner.app import create_app
from somner.services import Services, build_services
from somner.settings import AuthSettings, Settings
from tests.api.conftest import ADMIN_KEY, running
from tests.api.shapes import assert_dialect_error
from tests.api.test_gateway import as_key, make_key
from tests.api.test_openai_routes import chat
from tests.fakes.backends import FakeFarm
from tests.servers import free_port

pytestmark = pytest.mark.anyio

FAMILIES = (
    "somner_requests",
    "somner_request_duration_seconds",
    "somner_time_to_first_token_seconds",
    "somner_inter_token_latency_seconds",
    "somner_prompt_tokens",
    "somner_completion_tokens",
    "somner_queue_depth",
    "somner_queue_wait_seconds",
    "somner_in_flight_requests",
    "somner_rejected_requests",
    "somner_model_load_duration_seconds",
    "somner_model_load_failures",
    "somner_loaded_models",
    "somner_model_memory_bytes",
    "somner_engine_slots_busy",
)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum over samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert set(FAMILIES) <= families, set(FAMILIES) - families  # every family is described, even before use
    return samples(response.text)


async def test_ping_health_and_ready_need_no_key(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (_services, client):
        anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://localhost")
        async with anonymous:
            ping = await anonymous.get("/ping")
            assert (ping.status_code, ping.text) == (200, "pong")
            health = (await anonymous.get("/health")).json()
            assert health["status"] == "ok" and health["ready"] is True and health["database"] is True
            assert health["loaded_models"] == [] and set(health["models"]) == {"alpha", "beta"}
            assert health["queue_depth"] == 0 and health["in_flight"] == 0
            assert isinstance(health["gpus"], list) and health["uptime_s"] >= 0
            assert (await anonymous.get("/ready")).json() == {"ready": True}
            assert (await client.post("/v1/chat/completions", json=chat("hello"))).status_code == 200
            assert (await anonymous.get("/health")).json()["loaded_models"] == ["alpha"]
        assert farm.starts == 1  # the health routes themselves never started an engine


async def test_ready_can_require_a_model(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, ready_requires_model=True) as (_services, client):
        waiting = await client.get("/ready")
        assert waiting.status_code == 503 and waiting.json()["reasons"] == ["no model loaded"]
        assert (await client.post("/admin/models/alpha/load")).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_ready_fails_while_an_engine_makes_no_progress(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, stall_timeout=0.2) as (_services, client):
        hung = asyncio.create_task(client.post("/v1/chat/completions", json=chat("HANG now", stream=True)))
        await asyncio.sleep(0.5)  # (admitted, then silent for longer than stall_timeout; on a loaded machine later)
        for _ in range(100):
            stalled = await client.get("/ready")
            if stalled.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert stalled.status_code == 503
        assert "alpha" in stalled.json()["reasons"][0]
        busy = asyncio.create_task(client.post("/v1/chat/completions", json=chat("SLOW " * 12, model="beta")))
        await asyncio.sleep(0.45)
        assert "beta" not in (await client.get("/ready")).json()["reasons"][0]  # tokens keep coming
        await busy
        hung.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hung
        for _ in range(50):
            if (await client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert (await client.get("/ready")).status_code == 200


@contextlib.asynccontextmanager
async def app_lifespan(tmp_path: Path, farm: FakeFarm, **options: Any) -> AsyncIterator[Services]:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "alpha.gguf").write_bytes(b"GGUF")
    settings = Settings(data_dir=tmp_path / "data", auth=AuthSettings(admin_key=SecretStr(ADMIN_KEY)), **options)
    services = build_services(settings, factory=farm.factory)
    app = create_app(settings, services=services)
    async with app.router.lifespan_context(app):
        yield services


async def test_the_health_port_serves_only_health_and_answers_before_the_server_is_ready(
    tmp_path: Path, farm: FakeFarm
) -> None:
    port = free_port()
    farm.start_delay = 1.0  # a slow preload keeps the main server starting
    base = f"http://127.0.0.1:{port}"
    seen_starting = asyncio.Event()

    async def watch() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=5) as health:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    response = await health.get("/ready")
                    if response.status_code == 503 and response.json()["reasons"] == ["starting"]:
                        seen_starting.set()
                        return
                await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    async with app_lifespan(tmp_path, farm, health_port=port, preload=["alpha"]) as services:
        assert seen_starting.is_set()
        await watcher
        starts = farm.starts
        async with httpx.AsyncClient(base_url=base, timeout=5) as health:
            assert (await health.get("/ping")).text == "pong"
            assert (await health.get("/ready")).json() == {"ready": True}
            assert (await health.get("/health")).json()["loaded_models"] == ["alpha"]
            assert (await health.get("/v1/models")).status_code == 404  # nothing else lives there
            assert (await health.get("/metrics")).status_code == 404
        assert farm.starts == starts
        assert services.ready
    async with httpx.AsyncClient(base_url=base, timeout=2) as health:
        with pytest.raises(httpx.ConnectError):  # closed with the server
            await health.get("/ping")


async def test_a_taken_health_port_fails_the_start(tmp_path: Path, farm: FakeFarm) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"health port {port}"):
            async with app_lifespan(tmp_path, farm, health_port=port):
                pass


async def test_metrics_count_what_was_sent(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (_services, client):
        limited = await make_key(client, rpm=1)
        quota = await make_key(client, daily_tokens=1)
        for words in ("one two three", "four five", "six"):
            assert (await client.post("/v1/chat/completions", json=chat(words))).status_code == 200
        streamed = await client.post("/v1/chat/completions", json=chat("seven eight nine ten", stream=True))
        assert streamed.status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat("x", model="beta"))).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat("a", model="gamma"))).status_code == 404
        assert (await client.post("/v1/chat/completions", json=chat("a"), headers=as_key(limited))).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat("a"), headers=as_key(limited))).status_code == 429
        assert (await client.post("/v1/chat/completions", json=chat("a b"), headers=as_key(quota))).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat("a"), headers=as_key(quota))).status_code == 429
        for wrong in ("sk-somner-nope", "sk-somner-nope-2"):
            assert (await client.get("/v1/models", headers=as_key(wrong))).status_code == 401
        big = b'{"model": "alpha", "messages": [], "pad": "' + b"x" * 70_000 + b'"}'
        too_big = await client.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
        assert too_big.status_code == 413
        found = await scrape(client)

    chat_route = {"route": "/v1/chat/completions", "dialect": "openai"}
    assert value(found, "somner_requests_total", **chat_route, model="alpha", status="200") == 6
    assert value(found, "somner_requests_total", **chat_route, model="beta", status="200") == 1
    assert value(found, "somner_requests_total", **chat_route, status="429") == 2
    assert value(found, "somner_requests_total", **chat_route, model="", status="404") == 1
    assert value(found, "somner_requests_total", route="/v1/models", status="401") == 2
    assert value(found, "somner_request_duration_seconds_count", **chat_route, model="alpha") == 6
    # the fake engine: one token per word, prompt tokens = number of messages
    assert value(found, "somner_completion_tokens_total", model="alpha") == 3 + 2 + 1 + 4 + 1 + 2
    assert value(found, "somner_prompt_tokens_total", model="alpha") == 6
    assert value(found, "somner_time_to_first_token_seconds_count", model="alpha") == 6
    assert value(found, "somner_inter_token_latency_seconds_count", model="alpha") == 4  # those with 2+ tokens
    assert value(found, "somner_queue_wait_seconds_count") == 7
    assert value(found, "somner_rejected_requests_total", reason="rate_limit") == 1
    assert value(found, "somner_rejected_requests_total", reason="quota") == 1
    assert value(found, "somner_rejected_requests_total", reason="auth") == 2
    assert value(found, "somner_rejected_requests_total", reason="size") == 1
    assert value(found, "somner_rejected_requests_total", reason="queue_full") == 0
    assert value(found, "somner_model_load_duration_seconds_count", model="alpha") == 1
    assert value(found, "somner_model_load_duration_seconds_count", model="beta") == 1
    assert value(found, "somner_loaded_models") == 2
    assert value(found, "somner_in_flight_requests", model="alpha") == 0
    assert value(found, "somner_engine_slots_busy", model="alpha") == 0
    assert all(not set(dict(ls)) & {"key", "user"} for _, ls in found)  # bounded labels by default


async def test_load_failures_and_live_gauges(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, limits={"max_concurrent": 1, "max_queue": 1}) as (_services, client):
        farm.fail_loads("no such file")
        assert (await client.post("/v1/chat/completions", json=chat("x", model="beta"))).status_code == 503
        farm.start_error = None
        first = asyncio.create_task(client.post("/v1/chat/completions", json=chat("SLOW " * 20)))
        await asyncio.sleep(0.3)
        second = asyncio.create_task(client.post("/v1/chat/completions", json=chat("y")))
        await asyncio.sleep(0.1)
        third = await client.post("/v1/chat/completions", json=chat("z"))
        assert third.status_code == 503  # the queue is full
        live = await scrape(client)
        assert value(live, "somner_in_flight_requests", model="alpha") == 1
        assert value(live, "somner_engine_slots_busy", model="alpha") == 1
        assert value(live, "somner_queue_depth") == 1
        assert value(live, "somner_model_memory_bytes", model="alpha") >= 0
        await first
        await second
        after = await scrape(client)
    assert value(after, "somner_model_load_failures_total", model="beta") == 1
    assert value(after, "somner_rejected_requests_total", reason="queue_full") == 1
    assert value(after, "somner_queue_wait_seconds_count") == 3  # admitted: the failed load too
    assert value(after, "somner_queue_wait_seconds_sum") > 0.1  # the second waited for the slow first


async def test_metrics_access_json_and_per_key_labels(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, metrics_per_key=True) as (_services, client):
        anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://localhost")
        async with anonymous:
            assert_dialect_error(await anonymous.get("/metrics"), "openai", 401)
        inference = await make_key(client)
        assert_dialect_error(await client.get("/metrics", headers=as_key(inference)), "openai", 403)
        scraper = await make_key(client, scopes=["metrics"])
        assert (
            await client.post("/v1/chat/completions", json=chat("hi"), headers=as_key(inference))
        ).status_code == 200
        response = await client.get("/metrics", headers={**as_key(scraper), "accept": "application/json"})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        body = orjson.loads(response.content)
        requests = [s for s in body["somner_requests"] if s["name"] == "somner_requests_total"]
        keyed = [s for s in requests if s["labels"]["route"] == "/v1/chat/completions"]
        assert len(keyed) == 1 and keyed[0]["labels"]["key"] and keyed[0]["value"] == 1
    async with running(tmp_path / "public", farm, metrics_public=True) as (_services, client):
        anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://localhost")
        async with anonymous:
            assert (await anonymous.get("/metrics")).status_code == 200


async def test_one_log_line_per_request_without_prompt_text(
    tmp_path: Path, farm: FakeFarm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="somner.requests")
    async with running(tmp_path, farm) as (_services, client):
        response = await client.post(
            "/v1/chat/completions", json=chat("secret words here"), headers={"x-request-id": "req-123"}
        )
        assert response.headers["x-request-id"] == "req-123"
        await client.get("/ping")
    lines = [r for r in caplog.records if r.name == "somner.requests"]
    chat_lines = [r for r in lines if getattr(r, "route", None) == "/v1/chat/completions"]
    assert len(chat_lines) == 1
    record = chat_lines[0]
    assert (record.request_id, record.model, record.status) == ("req-123", "alpha", 200)  # type: ignore[attr-defined]
    assert (record.prompt_tokens, record.completion_tokens) == (1, 3)  # type: ignore[attr-defined]
    assert record.key_prefix and record.key_prefix.startswith("sk-somner-")  # type: ignore[attr-defined]
    assert "secret" not in record.getMessage()
    assert not [r for r in lines if getattr(r, "route", None) == "/ping"]  # health checks are not logged
