"""Every Ollama route and its error shape, over fake backends."""

from __future__ import annotations

import datetime as dt
import re
import struct
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from somner.services import Services
from tests.api.conftest import running
from tests.api.shapes import assert_dialect_error
from tests.api.test_gateway import as_key, make_key
from tests.fakes.backends import FakeFarm
from tests.fakes.gguf_files import make_gguf
from tests.fakes.http_files import FileServer, serving

pytestmark = pytest.mark.anyio


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_with_metadata() -> bytes:
    """A tensorless GGUF header with the metadata Ollama's listings describe (and a vocabulary to hide)."""
    kv = [
        _string("general.architecture") + struct.pack("<I", 8) + _string("gemma3"),
        _string("general.size_label") + struct.pack("<I", 8) + _string("270M"),
        _string("general.file_type") + struct.pack("<II", 4, 15),
        _string("gemma3.context_length") + struct.pack("<II", 4, 32768),
        _string("tokenizer.chat_template") + struct.pack("<I", 8) + _string("{{ messages }}"),
        _string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + _string("a") + _string("b"),
    ]
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + b"".join(kv)


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def in_flight(services: Services) -> dict[str, int]:
    return {s.id: s.in_flight for s in services.manager.statuses()}


def states(services: Services) -> dict[str, str]:
    return {s.id: s.state.value for s in services.manager.statuses()}


def parse_time(value: str) -> dt.datetime:
    """RFC 3339 (Ollama writes nanoseconds; Python reads microseconds)."""
    assert value.endswith("Z"), value
    return dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value[:-1]) + "+00:00")


async def test_probe_and_version(client: httpx.AsyncClient) -> None:
    anonymous = {"authorization": ""}
    probe = await client.get("/", headers=anonymous)
    assert probe.status_code == 200 and probe.text == "Ollama is running"
    assert (await client.head("/", headers=anonymous)).status_code == 200
    assert (await client.get("/api/version")).json() == {"version": "0.1.0"}


async def test_tags_list_every_name_with_a_tag(tmp_path: Path, farm: FakeFarm) -> None:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    (models / "gamma.gguf").write_bytes(gguf_with_metadata())
    (models / "gamma.yaml").write_text("aliases: [g2, 'g:7b']\n")
    async with running(tmp_path, farm) as (_services, client):
        listing = (await client.get("/api/tags")).json()["models"]
    by_name = {m["name"]: m for m in listing}
    assert list(by_name) == ["alpha:latest", "beta:latest", "gamma:latest", "g2:latest", "g:7b"]
    gamma = by_name["gamma:latest"]
    assert gamma["model"] == "gamma:latest"
    assert gamma["size"] == len(gguf_with_metadata())
    assert len(gamma["digest"]) == 64 and by_name["g2:latest"]["digest"] == gamma["digest"]
    assert gamma["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "gemma3",
        "families": ["gemma3"],
        "parameter_size": "270M",
        "quantization_level": "Q4_K_M",
    }
    assert abs(parse_time(gamma["modified_at"]).timestamp() - (models / "gamma.gguf").stat().st_mtime) < 1
    # An unreadable header is still listed, with what is known.
    assert by_name["alpha:latest"]["details"]["family"] == ""


async def test_show(tmp_path: Path, farm: FakeFarm) -> None:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    (models / "gamma.gguf").write_bytes(gguf_with_metadata())
    (models / "gamma.yaml").write_text(
        yaml.safe_dump({"defaults": {"temperature": 0.5, "max_tokens": 64, "stop": ["<end>"], "system": "Be brief."}})
    )
    async with running(tmp_path, farm) as (_services, client):
        shown = (await client.post("/api/show", json={"model": "gamma:latest"})).json()
        by_name = (await client.post("/api/show", json={"name": "gamma"})).json()
        missing = await client.post("/api/show", json={"model": "nope"})
        no_model = await client.post("/api/show", json={})
        wrong_type = await client.post("/api/show", json={"model": 3})
    assert shown["template"] == "{{ messages }}"
    assert shown["details"]["quantization_level"] == "Q4_K_M"
    assert shown["model_info"]["gemma3.context_length"] == 32768
    assert shown["model_info"]["tokenizer.ggml.tokens"] is None  # vocabularies are not sent
    assert "tokenizer.chat_template" not in shown["model_info"]
    assert shown["capabilities"] == ["completion", "tools"]
    assert shown["system"] == "Be brief."
    assert shown["parameters"].splitlines() == [
        f"{'temperature':<30} 0.5",
        f"{'num_predict':<30} 64",
        f'{"stop":<30} "<end>"',
    ]
    assert by_name["details"] == shown["details"]
    assert "nope" in assert_dialect_error(missing, "ollama", 404)
    assert "model" in assert_dialect_error(no_model, "ollama", 400)
    assert "model" in assert_dialect_error(wrong_type, "ollama", 400)


async def test_chat_whole(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post(
        "/api/chat",
        json={"model": "alpha:latest", "messages": [{"role": "user", "content": "one two three"}], "stream": False},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "alpha:latest"
    assert body["message"] == {"role": "assistant", "content": "one two three"}
    assert body["done"] is True and body["done_reason"] == "stop"
    assert body["prompt_eval_count"] == 1 and body["eval_count"] == 3
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(body[key], int) and body[key] >= 0
    assert body["total_duration"] >= body["load_duration"]
    assert body["total_duration"] > 0
    assert abs(parse_time(body["created_at"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=30)
    assert body["created_at"].endswith("Z") and len(body["created_at"].split(".")[1]) == 10  # nanoseconds + Z
    assert in_flight(services)["alpha"] == 0


async def test_chat_streams_by_default(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post(
        "/api/chat", json={"model": "alpha", "messages": [{"role": "user", "content": "x y z"}]}
    )
    events = lines(response)
    assert [e["message"]["content"] for e in events[:-1]] == ["x", " y", " z"]
    assert all(e["done"] is False for e in events[:-1])
    last = events[-1]
    assert last["done"] is True and last["done_reason"] == "stop" and last["eval_count"] == 3
    assert last["message"] == {"role": "assistant", "content": ""}
    assert in_flight(services)["alpha"] == 0


async def test_chat_options_map_to_sampling(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    options = {
        "num_predict": 2,
        "temperature": 0,
        "top_k": 5,
        "top_p": 0.5,
        "min_p": 0.1,
        "typical_p": 0.9,
        "repeat_penalty": 1.1,
        "repeat_last_n": 32,
        "presence_penalty": 0.2,
        "frequency_penalty": 0.3,
        "seed": 7,
        "stop": ["END"],
        "num_ctx": 4096,  # accepted and ignored: the configuration sets the context
        "num_gpu": 1,
    }
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": "a b c d"}],
        "options": options,
        "format": "json",
        "stream": False,
    }
    reply = (await client.post("/api/chat", json=body)).json()
    assert reply["message"]["content"] == "a b" and reply["done_reason"] == "length"
    sampling = farm.backends[0].requests[-1].sampling
    assert (sampling.max_tokens, sampling.temperature, sampling.top_k, sampling.top_p) == (2, 0.0, 5, 0.5)
    assert (sampling.min_p, sampling.typical_p, sampling.repeat_penalty, sampling.repeat_last_n) == (0.1, 0.9, 1.1, 32)
    assert (sampling.presence_penalty, sampling.frequency_penalty, sampling.seed) == (0.2, 0.3, 7)
    assert sampling.stop == ["END"] and sampling.json_mode and sampling.json_schema is None
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    unlimited = {**body, "options": {"num_predict": -1}, "format": schema}
    assert (await client.post("/api/chat", json=unlimited)).json()["message"]["content"] == "a b c d"
    sampling = farm.backends[0].requests[-1].sampling
    assert sampling.max_tokens is None and sampling.json_schema == schema


async def test_chat_tools_round_trip(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    tool = {
        "type": "function",
        "function": {"name": "lookup", "description": "Find", "parameters": {"type": "object", "properties": {}}},
    }
    history = [
        {"role": "user", "content": "weather"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "lookup", "arguments": {"q": 1}}}]},
        {"role": "tool", "tool_name": "lookup", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ]
    reply = await client.post(
        "/api/chat", json={"model": "alpha", "messages": history, "tools": [tool], "stream": False}
    )
    assert reply.status_code == 200, reply.text
    request = farm.backends[0].requests[-1]
    assert [t.name for t in request.tools] == ["lookup"]  # type: ignore[union-attr]
    assistant, answer = request.messages[1], request.messages[2]  # type: ignore[union-attr]
    assert assistant.tool_calls[0].name == "lookup" and orjson.loads(assistant.tool_calls[0].arguments) == {"q": 1}
    assert answer.role == "tool" and answer.tool_call_id == assistant.tool_calls[0].id and answer.name == "lookup"


async def test_tool_calls_come_back_as_objects() -> None:
    # Ollama's wire has no tool_choice, so the fake engine (which calls tools only when forced) cannot be made to
    # call one over it: the stream encoder is checked on the fake's scripted deltas instead.
    from somner.core import Chunk, FinishReason, ToolCallDelta, Usage
    from somner.wire.ollama import encode

    stream = encode.ChatStream("alpha", encode.Timeline())
    out = stream.chunk(Chunk(tool_calls=[ToolCallDelta(index=0, id="c1", name="f", arguments='{"wo')]))
    out += stream.chunk(Chunk(tool_calls=[ToolCallDelta(index=0, arguments='rd": "x"}')]))
    out += stream.chunk(Chunk(finish_reason=FinishReason.TOOL_CALLS, usage=Usage(prompt_tokens=1, completion_tokens=2)))
    events = [orjson.loads(line) for line in out.splitlines()]
    assert events[0]["message"]["tool_calls"] == [
        {"id": "c1", "function": {"index": 0, "name": "f", "arguments": {"word": "x"}}}
    ]
    assert events[1]["done"] is True and events[1]["done_reason"] == "stop"


async def test_generate(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    whole = (
        await client.post("/api/generate", json={"model": "alpha", "prompt": "p q", "system": "sys", "stream": False})
    ).json()
    assert whole["response"] == "p q" and whole["done"] is True and whole["eval_count"] == 2
    chat = farm.backends[0].requests[-1]
    assert [(m.role, m.content) for m in chat.messages] == [("system", "sys"), ("user", "p q")]  # type: ignore[union-attr]
    raw = await client.post("/api/generate", json={"model": "alpha", "prompt": "r s t", "raw": True})
    events = lines(raw)
    assert "".join(e["response"] for e in events) == "r s t"
    assert events[-1]["done"] is True and events[-1]["prompt_eval_count"] == 3
    assert farm.backends[0].requests[-1].prompt == "r s t"  # type: ignore[union-attr]


async def test_load_and_unload_without_generating(client: httpx.AsyncClient, services: Services) -> None:
    loaded = (await client.post("/api/generate", json={"model": "beta"})).json()
    assert loaded["done_reason"] == "load" and loaded["done"] is True and loaded["response"] == ""
    assert states(services)["beta"] == "loaded"
    ps = (await client.get("/api/ps")).json()["models"]
    assert [m["name"] for m in ps] == ["beta:latest"]
    expires = parse_time(ps[0]["expires_at"])
    assert dt.timedelta(seconds=200) < expires - dt.datetime.now(dt.UTC) < dt.timedelta(seconds=301)
    assert ps[0]["size_vram"] == 0
    unloaded = (await client.post("/api/chat", json={"model": "beta", "messages": [], "keep_alive": 0})).json()
    assert unloaded["done_reason"] == "unload" and unloaded["message"]["content"] == ""
    assert states(services)["beta"] == "unloaded"
    assert (await client.get("/api/ps")).json()["models"] == []
    # keep_alive 0 on a generation unloads the model as the request ends.
    body = {"model": "alpha", "prompt": "hi", "stream": False, "keep_alive": "0s"}
    assert (await client.post("/api/generate", json=body)).status_code == 200
    assert states(services)["alpha"] == "unloaded"


async def test_keep_alive_forever_is_reported(client: httpx.AsyncClient) -> None:
    await client.post("/api/generate", json={"model": "alpha", "keep_alive": -1})
    ps = (await client.get("/api/ps")).json()["models"]
    assert parse_time(ps[0]["expires_at"]).year == 9999


async def test_embed_and_legacy_embeddings(client: httpx.AsyncClient) -> None:
    body = (await client.post("/api/embed", json={"model": "alpha", "input": ["ab", "abcd"]})).json()
    assert body["model"] == "alpha" and len(body["embeddings"]) == 2
    for vector in body["embeddings"]:
        assert abs(sum(v * v for v in vector) - 1.0) < 1e-9  # normalized, as Ollama's /api/embed
    assert body["prompt_eval_count"] == 2 and body["total_duration"] >= body["load_duration"] >= 0
    one = (await client.post("/api/embed", json={"model": "alpha", "input": "ab", "dimensions": 2})).json()
    assert len(one["embeddings"]) == 1 and len(one["embeddings"][0]) == 2
    too_many = await client.post("/api/embed", json={"model": "alpha", "input": "ab", "dimensions": 9})
    assert "dimensions" in assert_dialect_error(too_many, "ollama", 400)
    empty = (await client.post("/api/embed", json={"model": "alpha", "input": []})).json()
    assert empty["embeddings"] == []
    legacy = (await client.post("/api/embeddings", json={"model": "alpha", "prompt": "abc"})).json()
    assert legacy == {"embedding": [3.0, 1.0, 0.0, 0.0]}  # as the engine gives it
    assert_dialect_error(await client.post("/api/embed", json={"model": "alpha", "input": 5}), "ollama", 400)


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/api/chat", {"messages": []}, 400, "model"),
        ("/api/chat", {"model": "gamma", "messages": [{"role": "user", "content": "x"}]}, 404, "gamma"),
        ("/api/chat", {"model": "alpha", "messages": "hello"}, 400, "messages"),
        ("/api/chat", {"model": "alpha", "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        (
            "/api/chat",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "options": {"temperature": "hot"}},
            400,
            "options.temperature",
        ),
        (
            "/api/chat",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": -5}},
            400,
            "num_predict",
        ),
        (
            "/api/chat",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "options": "fast"},
            400,
            "options",
        ),
        (
            "/api/chat",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "format": "yaml"},
            400,
            "format",
        ),
        (
            "/api/chat",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "think": "extreme"},
            400,
            "think",
        ),
        (
            "/api/chat",
            {"model": "alpha", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
            400,
            "not a PNG",  # (vision: see tests/integration/test_vision.py)
        ),
        (
            "/api/chat",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"},
            400,
            "keep_alive",
        ),
        (
            "/api/chat",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            400,
            "stream",
        ),
        ("/api/generate", {"model": "alpha", "prompt": 5}, 400, "prompt"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "images": ["aGk="]}, 400, "not a PNG"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "suffix": "y"}, 400, "suffix"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "template": "{{ .Prompt }}"}, 400, "template"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "context": [1, 2]}, 400, "context"),
        ("/api/generate", {"model": "alpha", "prompt": "x", "raw": True, "think": "high"}, 400, "raw"),
        ("/api/generate", {"model": "nope:7b", "prompt": "x"}, 404, "nope:7b"),
        ("/api/embed", {"input": "x"}, 400, "model"),
        ("/api/embeddings", {"model": "gamma", "prompt": "x"}, 404, "gamma"),
        ("/api/copy", {"source": "alpha"}, 400, "destination"),
        ("/api/copy", {"source": "gamma", "destination": "g"}, 404, "gamma"),
        ("/api/pull", {"stream": False}, 400, "model"),
    ],
)
async def test_bad_inputs(
    client: httpx.AsyncClient, services: Services, path: str, body: dict[str, Any], status: int, words: str
) -> None:
    message = assert_dialect_error(await client.post(path, json=body), "ollama", status)
    assert words in message
    assert all(n == 0 for n in in_flight(services).values())


async def test_bad_json_and_failures(client: httpx.AsyncClient, services: Services) -> None:
    assert_dialect_error(await client.post("/api/chat", content=b"{nope"), "ollama", 400)
    assert_dialect_error(await client.post("/api/chat", content=b"[1]"), "ollama", 400)
    boom = await client.post(
        "/api/chat", json={"model": "alpha", "messages": [{"role": "user", "content": "BOOM"}], "stream": False}
    )
    assert "secret" not in assert_dialect_error(boom, "ollama", 500)
    midway = await client.post("/api/generate", json={"model": "alpha", "prompt": "a b FAIL_MIDWAY d"})
    events = [orjson.loads(line) for line in midway.content.splitlines()]
    assert [e.get("response") for e in events[:2]] == ["a", " b"]
    assert set(events[-1]) == {"error"} and "crashed" in events[-1]["error"]
    assert all(n == 0 for n in in_flight(services).values())
    # The server keeps serving.
    ok = await client.post("/api/generate", json={"model": "alpha", "prompt": "fine", "stream": False})
    assert ok.json()["response"] == "fine"
    assert_dialect_error(await client.get("/api/nothing"), "ollama", 404)
    assert_dialect_error(await client.get("/api/chat"), "ollama", 405)


async def test_auth_and_rate_limits_apply(client: httpx.AsyncClient) -> None:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert_dialect_error(await client.post("/api/chat", json=body, headers={"authorization": ""}), "ollama", 401)
    wrong = as_key("sk-somner-wrong")
    assert_dialect_error(await client.post("/api/chat", json=body, headers=wrong), "ollama", 401)
    assert_dialect_error(await client.get("/api/tags", headers=wrong), "ollama", 401)
    key = await make_key(client, rpm=1)
    assert (await client.post("/api/chat", json=body, headers=as_key(key))).status_code == 200
    limited = await client.post("/api/generate", json={"model": "alpha", "prompt": "x"}, headers=as_key(key))
    assert_dialect_error(limited, "ollama", 429)
    assert int(limited.headers["retry-after"]) >= 1


async def test_management_needs_an_admin_key(client: httpx.AsyncClient) -> None:
    key = as_key(await make_key(client, models=["alpha"]))
    assert_dialect_error(
        await client.post("/api/copy", json={"source": "alpha", "destination": "a2"}, headers=key), "ollama", 403
    )
    assert_dialect_error(
        await client.request("DELETE", "/api/delete", json={"model": "alpha"}, headers=key), "ollama", 403
    )
    assert_dialect_error(await client.post("/api/pull", json={"model": "hf:a/b"}, headers=key), "ollama", 403)
    # ...and listings show only the models a key may use.
    assert [m["name"] for m in (await client.get("/api/tags", headers=key)).json()["models"]] == ["alpha:latest"]
    assert_dialect_error(await client.post("/api/show", json={"model": "beta"}, headers=key), "ollama", 403)


async def test_copy_and_delete(client: httpx.AsyncClient, services: Services) -> None:
    models = services.registry.models_dir
    assert (
        await client.post("/api/copy", json={"source": "alpha:latest", "destination": "first:latest"})
    ).status_code == 200
    assert (await client.post("/api/copy", json={"source": "alpha", "destination": "second:v2"})).status_code == 200
    assert yaml.safe_load((models / "alpha.yaml").read_text()) == {"aliases": ["first", "second:v2"]}
    names = [m["name"] for m in (await client.get("/api/tags")).json()["models"]]
    assert names == ["alpha:latest", "first:latest", "second:v2", "beta:latest"]
    reply = await client.post(
        "/api/chat", json={"model": "first", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    )
    assert reply.json()["message"]["content"] == "hi"
    taken = await client.post("/api/copy", json={"source": "beta", "destination": "first"})
    assert "taken" in assert_dialect_error(taken, "ollama", 400)
    bad = await client.post("/api/copy", json={"source": "beta", "destination": "../x"})
    assert_dialect_error(bad, "ollama", 400)

    assert (await client.request("DELETE", "/api/delete", json={"model": "first:latest"})).status_code == 200
    assert services.registry.find("first") is None and services.registry.find("second:v2") is not None
    assert (models / "alpha.gguf").exists()

    await client.post("/api/generate", json={"model": "alpha"})  # loaded: deleting unloads it first
    assert (await client.request("DELETE", "/api/delete", json={"model": "alpha"})).status_code == 200
    assert not (models / "alpha.gguf").exists() and not (models / "alpha.yaml").exists()
    assert services.registry.find("alpha") is None and services.registry.find("second:v2") is None
    assert states(services) == {"beta": "unloaded"}
    gone = await client.request("DELETE", "/api/delete", json={"model": "alpha"})
    assert_dialect_error(gone, "ollama", 404)


async def test_configured_models_are_not_deleted(tmp_path: Path, farm: FakeFarm) -> None:
    outside = tmp_path / "elsewhere.gguf"
    outside.write_bytes(b"GGUF")
    configured = [{"id": "conf", "path": str(outside), "aliases": ["c1"]}]
    async with running(tmp_path, farm, models=configured) as (_services, client):
        refused = await client.request("DELETE", "/api/delete", json={"model": "conf"})
        assert "configuration" in assert_dialect_error(refused, "ollama", 400)
        alias = await client.request("DELETE", "/api/delete", json={"model": "c1"})
        assert "configuration" in assert_dialect_error(alias, "ollama", 400)
        # A copy keeps the configured aliases (the model file's list replaces the configuration's).
        assert (await client.post("/api/copy", json={"source": "c1", "destination": "c2"})).status_code == 200
        names = [m["name"] for m in (await client.get("/api/tags")).json()["models"]]
        assert {"conf:latest", "c1:latest", "c2:latest"} <= set(names)
    assert outside.exists()


async def test_pull_streams_progress(tmp_path: Path, farm: FakeFarm, monkeypatch: pytest.MonkeyPatch) -> None:
    content = make_gguf([300_000])
    files = FileServer(files={"/org/repo/tiny-Q4_K_M.gguf": content}, listings={"org/repo": ["tiny-Q4_K_M.gguf"]})
    with serving(files):
        monkeypatch.setenv("HF_ENDPOINT", files.url)
        async with running(tmp_path, farm) as (services, client):
            refused = await client.post("/api/pull", json={"model": "llama3"})
            assert "Ollama library" in assert_dialect_error(refused, "ollama", 400)
            response = await client.post("/api/pull", json={"model": "hf.co/org/repo:Q4_K_M"})
            events = lines(response)
            assert events[0] == {"status": "pulling manifest"}
            progress = [e for e in events if "completed" in e]
            assert progress and progress[-1]["completed"] == progress[-1]["total"] == len(content)
            assert [e["status"] for e in events[-2:]] == ["writing tiny-Q4_K_M", "success"]
            assert services.registry.find("tiny-Q4_K_M") is not None
            names = [m["name"] for m in (await client.get("/api/tags")).json()["models"]]
            assert "tiny-Q4_K_M:latest" in names
            again = await client.post("/api/pull", json={"name": "hf:org/repo", "stream": False})
            assert "already" in assert_dialect_error(again, "ollama", 400)
            broken = await client.post("/api/pull", json={"model": "hf.co/org/missing"})
            assert set(lines(broken)[-1]) == {"error"}
            whole = await client.post("/api/pull", json={"model": f"{files.url}/nothing.gguf", "stream": False})
            assert_dialect_error(whole, "ollama", 400)
