"""The Kobold API with plain httpx (as Kobold front ends call it) against a running `somner serve`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.servers import ServeProcess

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"


@pytest.fixture(scope="module")
def http(serve: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve.url, headers=serve.headers, timeout=120) as client:
        yield client


def events_of(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event name, data) of each SSE event, as they arrive."""
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, orjson.loads(line[6:])


def test_what_the_server_is(http: httpx.Client) -> None:
    assert http.get("/api/v1/model").json() == {"result": f"koboldcpp/{MODEL}"}
    assert http.get("/api/extra/version").json()["result"] == "KoboldCpp"
    context = http.get("/api/v1/config/max_context_length").json()["value"]
    assert isinstance(context, int) and context >= 256


def test_generate_and_stream_return_the_same_text(http: httpx.Client) -> None:
    body = {"prompt": "The capital of France is", "max_length": 8, "temperature": 0, "sampler_seed": 3}
    whole = http.post("/api/v1/generate", json=body)
    assert whole.status_code == 200, whole.text
    result = whole.json()["results"][0]
    assert result["finish_reason"] in ("stop", "length")
    assert isinstance(result["text"], str) and result["text"]
    assert http.post("/api/v1/generate", json=body).json()["results"][0]["text"] == result["text"]
    with http.stream("POST", "/api/extra/generate/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(events_of(response.iter_lines()))
    assert all(name == "message" for name, _ in events)
    assert "".join(data["token"] for _, data in events) == result["text"]
    assert events[-1][1]["finish_reason"] == result["finish_reason"]
    counted = http.post("/api/extra/tokencount", json={"prompt": result["text"], "special": False}).json()["value"]
    assert counted <= 8


def test_abort_stops_the_callers_stream(http: httpx.Client) -> None:
    body = {"prompt": "Once upon a time", "max_length": 200, "ban_eos_token": True, "genkey": "KCPP-abort"}
    tokens = 0
    with http.stream("POST", "/api/extra/generate/stream", json=body) as response:
        assert response.status_code == 200
        for _name, data in events_of(response.iter_lines()):
            if data["finish_reason"] is not None:
                final = data
                break
            tokens += 1
            if tokens == 3:
                check = http.post("/api/extra/generate/check", json={"genkey": "KCPP-abort"}).json()
                assert check["results"][0]["text"]
                assert http.post("/api/extra/abort", json={"genkey": "KCPP-abort"}).json() == {"success": True}
    assert final["finish_reason"] == "abort"
    assert tokens < 100  # without the abort: 200 (the end of text is banned)


def test_tokencount_matches_tokenize(http: httpx.Client) -> None:
    text = "Hello there, General Kenobi!"
    for special in (True, False):
        counted = http.post("/api/extra/tokencount", json={"prompt": text, "special": special}).json()
        tokens = http.post("/tokenize", json={"content": text, "add_special": special}).json()["tokens"]
        assert counted == {"value": len(tokens), "ids": tokens}
    assert http.post("/api/extra/tokencount", json={"prompt": text}).json()["value"] == len(tokens) + 1  # BOS


def test_prompts_longer_than_the_context_are_cut_to_fit(http: httpx.Client) -> None:
    context = http.get("/api/v1/config/max_context_length").json()["value"]
    story = "The cat sat on the mat. " * 800
    assert http.post("/api/extra/tokencount", json={"prompt": story}).json()["value"] > context
    too_long = http.post("/v1/completions", json={"model": MODEL, "prompt": story, "max_tokens": 2})
    assert too_long.status_code == 400  # the engine itself refuses it
    response = http.post("/api/v1/generate", json={"prompt": story, "max_length": 2, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["finish_reason"] in ("stop", "length")


def test_bad_inputs_get_koboldcpps_error_shape(http: httpx.Client) -> None:
    for body, status in (
        ({"prompt": "x", "max_length": "8"}, 400),
        ({"max_length": 8}, 400),
        ({"prompt": "x", "model": "no-such-model"}, 404),
        ({"prompt": "x", "max_length": 2, "grammar": "root ::= ("}, 400),
    ):
        response = http.post("/api/v1/generate", json=body)
        assert response.status_code == status, response.text
        assert set(response.json()["detail"]) == {"msg", "type"}
    assert http.post("/api/v1/generate", json={"prompt": "x", "max_length": 1}).status_code == 200


def test_koboldcpp_extras_on_the_real_engine(http: httpx.Client) -> None:
    """true_max_context_length, tokenize/detokenize with the model's tokenizer, perf with the engine's timings,
    and the /api/latest aliases."""
    context = http.get("/api/v1/config/max_context_length").json()
    assert http.get("/api/extra/true_max_context_length").json() == context
    assert http.get("/api/latest/model").json() == http.get("/api/v1/model").json()
    text = "The capital of France is"
    tokenized = http.post("/api/extra/tokenize", json={"prompt": text, "special": False}).json()
    assert tokenized == http.post("/api/extra/tokencount", json={"prompt": text, "special": False}).json()
    assert http.post("/api/extra/detokenize", json={"ids": tokenized["ids"]}).json() == {
        "result": text,
        "success": True,
    }
    with_bos = http.post("/api/extra/tokenize", json={"prompt": text}).json()["ids"]
    assert http.post("/api/extra/detokenize", json={"ids": with_bos[:1], "special": False}).json()["result"] == ""
    too_big = http.post("/api/extra/detokenize", json={"ids": [10**9]})
    assert too_big.status_code == 400 and "vocabulary" in too_big.json()["detail"]["msg"]
    body = {"prompt": text, "max_length": 6, "temperature": 0, "sampler_seed": 11, "ban_eos_token": True}
    assert http.post("/api/latest/generate", json=body).status_code == 200
    perf = http.get("/api/extra/perf").json()
    assert (perf["last_token_count"], perf["last_seed"], perf["stop_reason"]) == (6, 11, 0)
    assert perf["last_input_count"] >= len(with_bos) and perf["total_gens"] >= 1
    assert perf["last_eval_time"] > 0 and perf["last_eval_speed"] > 0 and perf["idle"] == 1
