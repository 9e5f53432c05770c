"""KoboldCpp's extra routes and `/api/latest/...` aliases, over fake backends (default model `alpha`):
true_max_context_length, perf, tokenize, detokenize, soft prompts, and their bad inputs in Kobold's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from somner.core import FinishReason
from somner.services import Services
from somner.wire.kobold import encode
from tests.api.conftest import running
from tests.api.shapes import assert_dialect_error
from tests.api.test_gateway import make_key
from tests.api.test_kobold_routes import headers_of, stream_events
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

GETS = [
    "model",
    "info/version",
    "config/max_context_length",
    "config/max_length",
    "config/soft_prompt",
    "config/soft_prompts_list",
]


@pytest.fixture
async def kobold(tmp_path: Path, farm: FakeFarm) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    async with running(tmp_path, farm, model="alpha") as pair:
        yield pair


@pytest.mark.parametrize("path", GETS)
async def test_latest_aliases_answer_as_v1(kobold: tuple[Services, httpx.AsyncClient], path: str) -> None:
    _, client = kobold
    v1 = await client.get(f"/api/v1/{path}")
    latest = await client.get(f"/api/latest/{path}")
    assert v1.status_code == latest.status_code == 200
    assert v1.json() == latest.json()


async def test_latest_generate_and_only_koboldcpps_aliases(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    body = {"prompt": "one two three", "max_length": 2}
    v1 = (await client.post("/api/v1/generate", json=body)).json()
    assert (await client.post("/api/latest/generate", json=body)).json() == v1
    assert v1 == {"results": [{"text": "one two", "finish_reason": "length"}]}
    assert (await client.get("/api/v1/config/soft_prompt")).json() == {"value": ""}
    assert (await client.get("/api/v1/config/soft_prompts_list")).json() == {"values": []}
    # KoboldCpp lists each alias; nothing else lives under /api/latest (its extras are /api/extra only)
    for method, path in (
        ("POST", "/api/latest/abort"),
        ("GET", "/api/latest/perf"),
        ("POST", "/api/latest/tokencount"),
    ):
        assert_dialect_error(await client.request(method, path, json={}), "kobold", 404)
    assert_dialect_error(await client.get("/api/latest/generate"), "kobold", 405)
    assert_dialect_error(await client.post("/api/latest/generate", json={"prompt": 3}), "kobold", 400)
    assert_dialect_error(
        await client.post("/api/latest/generate", json={"prompt": "x", "model": "gamma"}), "kobold", 404
    )


async def test_true_max_context_length(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, model="alpha") as (_, client):
        assert (await client.get("/api/extra/true_max_context_length")).json() == {"value": 4096}
        assert_dialect_error(await client.post("/api/extra/true_max_context_length"), "kobold", 405)
    settings: dict[str, Any] = {"model": "alpha", "models": [{"id": "alpha", "ctx": 512}]}
    async with running(tmp_path / "b", farm, **settings) as (_, client):
        assert (await client.get("/api/extra/true_max_context_length")).json() == {"value": 512}
    async with running(tmp_path / "c", farm) as (_, client):  # two models, no default: name the model
        message = assert_dialect_error(await client.get("/api/extra/true_max_context_length"), "kobold", 400)
        assert "model" in message


async def test_tokenize_is_tokencount(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    for body in ({"prompt": "four words right here"}, {"prompt": "two words", "special": False}):
        counted = (await client.post("/api/extra/tokencount", json=body)).json()
        assert (await client.post("/api/extra/tokenize", json=body)).json() == counted
    assert (await client.post("/api/extra/tokenize", json={"prompt": "a bb ccc"})).json() == {
        "value": 3,
        "ids": [1, 2, 3],
    }
    for bad in ({"prompt": 4}, {}, {"prompt": "x", "special": "yes"}, {"prompt": ["x"]}):
        assert_dialect_error(await client.post("/api/extra/tokenize", json=bad), "kobold", 400)
    assert_dialect_error(await client.post("/api/extra/tokenize", content=b"{not json"), "kobold", 400)
    assert_dialect_error(
        await client.post("/api/extra/tokenize", json={"prompt": "x", "model": "gamma"}), "kobold", 404
    )
    assert_dialect_error(await client.get("/api/extra/tokenize"), "kobold", 405)


async def test_detokenize(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    ids = (await client.post("/api/extra/tokenize", json={"prompt": "abc de", "special": False})).json()["ids"]
    answer = await client.post("/api/extra/detokenize", json={"ids": ids})
    assert answer.status_code == 200
    assert answer.json() == {"result": "xxx xx", "success": True}  # (the fake's tokenizer keeps lengths only)
    assert (await client.post("/api/extra/detokenize", json={"ids": [1], "special": False})).json()["success"]
    assert (await client.post("/api/extra/detokenize", json={})).json() == {"result": "", "success": True}
    named = await client.post("/api/extra/detokenize", json={"ids": [2], "model": "beta"})
    assert named.json() == {"result": "xx", "success": True}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (orjson.dumps({"ids": "1 2"}), 400),
        (orjson.dumps({"ids": ["a"]}), 400),
        (orjson.dumps({"ids": [1.5]}), 400),
        (orjson.dumps({"ids": [-1]}), 400),
        (orjson.dumps({"ids": [1], "special": "no"}), 400),
        (orjson.dumps([1, 2]), 400),
        (b"ids=1", 400),
        (orjson.dumps({"ids": [1], "model": "gamma"}), 404),
        (orjson.dumps({"ids": [1], "model": ""}), 400),
    ],
)
async def test_bad_detokenize(kobold: tuple[Services, httpx.AsyncClient], body: bytes, status: int) -> None:
    services, client = kobold
    response = await client.post("/api/extra/detokenize", content=body, headers={"content-type": "application/json"})
    assert_dialect_error(response, "kobold", status)
    assert sum(s.in_flight for s in services.manager.statuses()) == 0


async def test_perf_reports_the_callers_last_generation(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    services, client = kobold
    alice, bob = await make_key(client, user="alice"), await make_key(client, user="bob")
    before = (await client.get("/api/extra/perf", headers=headers_of(alice))).json()
    assert before["total_gens"] == 0 and before["stop_reason"] == -1 and before["last_seed"] == -1
    assert before["idle"] == 1 and before["queue"] == 0 and before["uptime"] >= 0 and before["idletime"] >= 0
    assert set(before) >= {
        "last_process", "last_eval", "last_token_count", "last_input_count", "last_process_time", "last_eval_time",
        "last_process_speed", "last_eval_speed", "last_draft_success", "last_draft_failed", "total_img_gens",
        "hordeexitcounter", "quiet",
    }  # fmt: skip

    body = {"prompt": "one two three four", "max_length": 3, "sampler_seed": 42}
    assert (await client.post("/api/v1/generate", json=body, headers=headers_of(alice))).status_code == 200
    mine = (await client.get("/api/extra/perf", headers=headers_of(alice))).json()
    assert (mine["last_token_count"], mine["last_input_count"], mine["last_seed"]) == (3, 4, 42)
    assert mine["stop_reason"] == 0  # out of tokens (max_length)
    assert mine["total_gens"] == 1 and mine["idle"] == 1
    assert mine["last_eval_time"] >= 0 and mine["last_process_time"] >= 0
    if mine["last_eval_time"] > 0:
        assert mine["last_eval_speed"] == pytest.approx(3 / mine["last_eval_time"])
        assert mine["last_eval"] == pytest.approx(mine["last_eval_time"] * 1000 / 3)

    # bob sees the server's count, not alice's generation
    theirs = (await client.get("/api/extra/perf", headers=headers_of(bob))).json()
    assert theirs["total_gens"] == 1 and theirs["last_token_count"] == 0 and theirs["last_seed"] == -1

    streamed = await client.post(
        "/api/extra/generate/stream", json={"prompt": "a b", "sampler_seed": -1}, headers=headers_of(bob)
    )
    assert stream_events(streamed.content)[-1][1]["finish_reason"] == "stop"
    theirs = (await client.get("/api/extra/perf", headers=headers_of(bob))).json()
    assert (theirs["total_gens"], theirs["last_token_count"], theirs["stop_reason"], theirs["last_seed"]) == (
        2,
        2,
        1,
        -1,
    )
    assert len(services.generations) == 0


async def test_perf_needs_a_key_and_get(kobold: tuple[Services, httpx.AsyncClient]) -> None:
    _, client = kobold
    for path in ("/api/extra/perf", "/api/extra/true_max_context_length", "/api/latest/model"):
        assert_dialect_error(await client.get(path, headers={"authorization": ""}), "kobold", 401)
    for path in ("/api/extra/tokenize", "/api/extra/detokenize", "/api/latest/generate"):
        assert_dialect_error(await client.post(path, json={}, headers={"authorization": ""}), "kobold", 401)
    assert_dialect_error(await client.post("/api/extra/perf"), "kobold", 405)


def test_stop_reasons() -> None:
    assert encode.stop_reason(None, on_stop_sequence=False) == -1
    assert encode.stop_reason(FinishReason.LENGTH, on_stop_sequence=False) == 0
    assert encode.stop_reason(FinishReason.STOP, on_stop_sequence=False) == 1
    assert encode.stop_reason(FinishReason.STOP, on_stop_sequence=True) == 2
