"""Every OpenAI route and every error shape, over fake backends."""

from __future__ import annotations

import base64
import struct

import httpx
import orjson
import pytest

from somner.services import Services
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "alpha", "messages": [{"role": "user", "content": content}], **extra}


def sse_events(body: bytes) -> list[object]:
    out: list[object] = []
    for block in body.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: "), block
        payload = block[6:]
        out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]


def in_flight(services: Services) -> dict[str, int]:
    return {s.id: s.in_flight for s in services.manager.statuses()}


async def test_models_list_and_get(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/v1/models")).json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["alpha", "beta"]
    assert all(m["object"] == "model" and m["status"] == "unloaded" for m in listing["data"])
    assert (await client.get("/v1/models/beta")).json()["id"] == "beta"
    error = assert_openai_error(await client.get("/v1/models/gamma"), 404, "model_not_found")
    assert "alpha, beta" in str(error["message"])
    assert_openai_error(await client.get("/v1/models/../../etc/passwd"), 404)


async def test_chat_whole(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/chat/completions", json=chat("one two three"))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "alpha"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "one two three", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == 4
    assert in_flight(services)["alpha"] == 0


async def test_chat_length_and_logprobs(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/chat/completions", json=chat("a b c d", max_tokens=2, logprobs=True))).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert [t["token"] for t in body["choices"][0]["logprobs"]["content"]] == ["a", "b"]


async def test_chat_streamed_with_usage(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post(
        "/v1/chat/completions", json=chat("x y", stream=True, stream_options={"include_usage": True})
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"  # type: ignore[index]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])  # type: ignore[index]
    assert text == "x y"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2  # type: ignore[index]
    assert in_flight(services)["alpha"] == 0


async def test_stream_without_usage_has_no_usage_chunk(client: httpx.AsyncClient) -> None:
    events = sse_events((await client.post("/v1/chat/completions", json=chat("x", stream=True))).content)
    assert all("usage" not in e for e in events[:-1])  # type: ignore[operator]


async def test_completions_multi_prompt(client: httpx.AsyncClient, services: Services) -> None:
    body = (
        await client.post("/v1/completions", json={"model": "beta", "prompt": ["a b", "c d e"], "max_tokens": 5})
    ).json()
    assert body["object"] == "text_completion"
    assert [c["text"] for c in body["choices"]] == ["a b", "c d e"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"]["completion_tokens"] == 5
    stream = sse_events(
        (
            await client.post(
                "/v1/completions",
                json={
                    "model": "beta",
                    "prompt": ["a b", "c"],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            )
        ).content
    )
    assert stream[-1] == "[DONE]"
    by_index: dict[int, str] = {}
    for event in stream[:-1]:
        for choice in event["choices"]:  # type: ignore[index]
            by_index[choice["index"]] = by_index.get(choice["index"], "") + choice["text"]
    assert by_index == {0: "a b", 1: "c"}
    assert stream[-2]["usage"]["completion_tokens"] == 3  # type: ignore[index]
    assert in_flight(services)["beta"] == 0


async def test_completions_token_prompt(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/completions", json={"model": "alpha", "prompt": [5, 6]})).json()
    assert body["choices"][0]["text"] == "t5 t6"


async def test_embeddings(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/embeddings", json={"model": "alpha", "input": ["ab", "abc"]})).json()
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"][0] == 3.0
    encoded = (
        await client.post("/v1/embeddings", json={"model": "alpha", "input": "ab", "encoding_format": "base64"})
    ).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert struct.unpack("<4f", raw)[0] == 2.0
    assert_openai_error(
        await client.post("/v1/embeddings", json={"model": "alpha", "input": "x", "dimensions": 3}), 400
    )
    assert_openai_error(await client.post("/v1/embeddings", json={"model": "alpha"}), 400, "missing_required_parameter")


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{oops", 400, "invalid_json", None),
        (orjson.dumps(chat("x", temperature="warm")), 400, "invalid_type", "temperature"),
        (orjson.dumps(chat("x", n=17)), 400, "invalid_value", "n"),
        (
            orjson.dumps({"model": "gamma", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model_not_found",
            "model",
        ),
        (
            orjson.dumps({"model": "../alpha", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model_not_found",
            "model",
        ),
        (orjson.dumps(chat("CONTEXT")), 400, "context_length_exceeded", "messages"),
        (orjson.dumps(chat("FAIL_BEFORE")), 502, "engine_error", None),
    ],
)
async def test_chat_errors(
    client: httpx.AsyncClient, services: Services, body: bytes, status: int, code: str, param: str | None
) -> None:
    response = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(response, status, code)
    assert error["param"] == param
    assert all(v == 0 for v in in_flight(services).values())


async def test_internal_errors_hide_details_and_name_the_request(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/chat/completions", json=chat("BOOM"), headers={"x-request-id": "req-123"})
    error = assert_openai_error(response, 500)
    assert "req-123" in str(error["message"])
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] == "req-123"
    assert in_flight(services)["alpha"] == 0


async def test_failure_mid_stream_ends_with_an_error_event(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post("/v1/chat/completions", json=chat("a b FAIL_MIDWAY d", stream=True))
    assert response.status_code == 200
    events = sse_events(response.content)
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "engine_error"  # type: ignore[index]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])  # type: ignore[index]
    assert text == "a b"
    assert in_flight(services)["alpha"] == 0


async def test_body_size_limit(client: httpx.AsyncClient, farm: FakeFarm) -> None:
    response = await client.post("/v1/chat/completions", json=chat("x" * 70_000))
    assert_openai_error(response, 413, "request_too_large")
    assert farm.starts == 0  # refused before any engine work


async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nothing"), 404, "not_found")
    assert_openai_error(await client.get("/v1/chat/completions"), 405, "method_not_allowed")


async def test_request_ids(client: httpx.AsyncClient) -> None:
    generated = (await client.get("/v1/models")).headers["x-request-id"]
    assert len(generated) == 32
    assert (await client.get("/v1/models", headers={"x-request-id": "bad id!\n"})).headers[
        "x-request-id"
    ] != "bad id!\n"
