"""The exllamav3 backend end to end without a GPU: the gateway starts `somner worker-exl3` as a real process,
whose generator is the CPU fake (tests/fakes/exl3_generator.py), and every dialect is served through it.

What is real here: the gateway, the worker process, its HTTP surface (engine/server.py), the ExLlamaV3 engine's
scheduler and request preparation, the tool-call parser, stop strings, usage and cancellation. What is fake: the
generator under the scheduler (its tokens are characters, and it answers what the prompt tells it to)."""

from __future__ import annotations

import importlib.util
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from somner.models.backends.exl3 import Exl3WorkerBackend
from somner.settings import Settings
from tests.fakes.exl3_generator import write_folder
from tests.inprocess import NO_AUTH, ThreadedGateway

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fake-exl3"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 2}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    base = tmp_path_factory.mktemp("exl3")
    models = [
        {"id": MODEL, "backend": "exllamav3", "path": str(write_folder(base / "good", step_delay=0.002))},
        {"id": "exl3-missing", "backend": "exllamav3", "path": str(base / "nowhere")},
        {"id": "exl3-gptq", "backend": "exllamav3", "path": str(write_folder(base / "gptq", quant_method="gptq"))},
        {
            "id": "exl3-broken",
            "backend": "exllamav3",
            "path": str(write_folder(base / "broken", fail_load="CUDA out of memory (fake)")),
        },
    ]
    settings = Settings(data_dir=base / "data", auth=NO_AUTH, models=models)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOMNER_EXL3_GENERATOR", "tests.fakes.exl3_generator:load")
        patch.setenv("PYTHONPATH", str(ROOT))
        with ThreadedGateway(settings) as running:
            yield running


@pytest.fixture
def client(gateway: ThreadedGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def prompt_tokens(text: str) -> int:
    """What the fake counts for one user message in ChatML: BOS, one token per character, one per special."""
    rendered = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return 1 + len(re.sub(r"<\|im_(start|end)\|>", "#", rendered))


def sse_events(response: httpx.Response) -> list[Any]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(orjson.loads(line.removeprefix("data: ")))
    return events


def worker_of(gateway: ThreadedGateway) -> Exl3WorkerBackend:
    backend = gateway.services.manager.backend_of(MODEL)
    assert isinstance(backend, Exl3WorkerBackend)
    return backend


def worker_stats(backend: Exl3WorkerBackend) -> dict[str, Any]:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(backend.socket_path))
    finally:
        probe.close()
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(backend.socket_path)), base_url="http://w") as c:
        stats: dict[str, Any] = c.get("/stats").json()
        return stats


# -- OpenAI --------------------------------------------------------------------------------------------------


def test_openai_chat(client: httpx.Client) -> None:
    reply = client.post("/v1/chat/completions", json=chat_body("say: Hello from EXL3"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == "Hello from EXL3"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == prompt_tokens("say: Hello from EXL3")
    assert body["usage"]["completion_tokens"] == len("Hello from EXL3") + 1  # (and the end-of-generation token)


def test_openai_chat_streamed_with_usage(client: httpx.Client) -> None:
    body = chat_body("count: 12", stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = sse_events(response)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == " ".join(str(i) for i in range(1, 13))
    assert len([e for e in events if e["choices"] and e["choices"][0]["delta"].get("content")]) > 5  # streamed
    finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert finish == ["stop"]
    assert events[-1]["usage"]["completion_tokens"] == len(text) + 1


def test_stop_strings_and_max_tokens(client: httpx.Client) -> None:
    stopped = client.post("/v1/chat/completions", json=chat_body("say: keep this END not this", stop=["END"])).json()
    assert stopped["choices"][0]["message"]["content"] == "keep this "
    assert stopped["choices"][0]["finish_reason"] == "stop"
    cut = client.post("/v1/chat/completions", json=chat_body("count: 50", max_tokens=6)).json()
    assert cut["choices"][0]["message"]["content"] == "1 2 3 "
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 6


def test_openai_completions(client: httpx.Client) -> None:
    reply = client.post("/v1/completions", json={"model": MODEL, "prompt": "Story time\nsay: once upon", "n": 2})
    assert reply.status_code == 200, reply.text
    assert [c["text"] for c in reply.json()["choices"]] == ["once upon", "once upon"]
    body = {"model": MODEL, "prompt": "count: 3", "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as response:
        events = sse_events(response)
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == "1 2 3"


def test_a_tool_call(client: httpx.Client) -> None:
    reply = client.post("/v1/chat/completions", json=chat_body(f"say: {CALL}", tools=[WEATHER]))
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_a_forced_tool_call_streamed(client: httpx.Client) -> None:
    body = chat_body(f"say: {CALL}", tools=[WEATHER], tool_choice="required", stream=True)
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = sse_events(response)
    calls = [c for e in events if e["choices"] for c in e["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather"
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_json_schema_output_validates(client: httpx.Client) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA}}
    reply = client.post("/v1/chat/completions", json=chat_body("plan a trip", response_format=response_format))
    assert reply.status_code == 200, reply.text
    jsonschema.validate(orjson.loads(reply.json()["choices"][0]["message"]["content"]), SCHEMA)


def test_what_the_engine_cannot_do_is_a_400(client: httpx.Client) -> None:
    reply = client.post("/v1/chat/completions", json=chat_body("hi", logprobs=True, top_logprobs=2))
    assert reply.status_code == 400
    assert "does not support logprobs" in reply.json()["error"]["message"]
    reply = client.post("/v1/embeddings", json={"model": MODEL, "input": "hi"})
    assert reply.status_code == 400
    assert "serves no embeddings" in reply.json()["error"]["message"]


def test_tokenize_and_detokenize(client: httpx.Client) -> None:
    tokens = client.post("/tokenize", json={"model": MODEL, "content": "Hi<|im_end|>"}).json()["tokens"]
    assert tokens == [256 + ord("H"), 256 + ord("i"), 3]
    content = client.post("/detokenize", json={"model": MODEL, "tokens": tokens}).json()["content"]
    assert content == "Hi<|im_end|>"


def test_a_client_that_goes_away_cancels_its_generation(gateway: ThreadedGateway, client: httpx.Client) -> None:
    client.post("/v1/chat/completions", json=chat_body("say: warm")).raise_for_status()
    before = worker_stats(worker_of(gateway))["engine"]["cancelled"]
    with client.stream("POST", "/v1/chat/completions", json=chat_body("count: 100000", stream=True)) as response:
        assert response.status_code == 200
        for n, _line in enumerate(response.iter_lines()):
            if n > 10:
                break
    deadline = time.monotonic() + 10
    while True:
        stats = worker_stats(worker_of(gateway))
        if stats["engine"]["cancelled"] > before and stats["engine"]["active"] == 0:
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)
    assert not any(slot["busy"] for slot in stats["slots"])


# -- the other dialects --------------------------------------------------------------------------------------


def test_ollama_chat_and_generate(client: httpx.Client) -> None:
    with client.stream("POST", "/api/chat", json=chat_body("say: Ollama here")) as response:
        assert response.status_code == 200
        lines = [orjson.loads(line) for line in response.iter_lines() if line]
    assert "".join(line["message"]["content"] for line in lines) == "Ollama here"
    assert lines[-1]["done"] is True
    assert lines[-1]["prompt_eval_count"] == prompt_tokens("say: Ollama here")
    assert lines[-1]["eval_count"] == len("Ollama here") + 1
    reply = client.post("/api/generate", json={"model": MODEL, "prompt": "count: 4", "stream": False, "raw": True})
    assert reply.status_code == 200, reply.text
    assert reply.json()["response"] == "1 2 3 4"
    structured = client.post("/api/chat", json=chat_body("hi", format=SCHEMA, stream=False))
    jsonschema.validate(orjson.loads(structured.json()["message"]["content"]), SCHEMA)


def test_anthropic_messages(client: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "say: Claude-style"}]}
    reply = client.post("/v1/messages", json=body)
    assert reply.status_code == 200, reply.text
    message = reply.json()
    assert message["content"] == [{"type": "text", "text": "Claude-style"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == prompt_tokens("say: Claude-style")
    assert message["usage"]["output_tokens"] == len("Claude-style") + 1
    stopped = client.post("/v1/messages", json={**body, "stop_sequences": ["-"]}).json()
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "-")
    tools = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]  # type: ignore[index]
    used = client.post(
        "/v1/messages", json={**body, "tools": tools, "messages": [{"role": "user", "content": f"say: {CALL}"}]}
    ).json()
    assert used["stop_reason"] == "tool_use"
    assert [(b["name"], b["input"]) for b in used["content"] if b["type"] == "tool_use"] == [
        ("get_weather", {"city": "Paris"})
    ]
    with client.stream("POST", "/v1/messages", json={**body, "stream": True, "max_tokens": 4}) as response:
        events = [
            orjson.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line.startswith("data")
        ]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert "".join(d["text"] for d in deltas) == "Clau"
    assert [e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"] == ["max_tokens"]


def test_kobold_generate(client: httpx.Client) -> None:
    reply = client.post("/api/v1/generate", json={"model": MODEL, "prompt": "say: Kobold", "max_length": 50})
    assert reply.status_code == 200, reply.text
    assert reply.json()["results"][0]["text"] == "Kobold"
    cut = client.post("/api/v1/generate", json={"model": MODEL, "prompt": "count: 40", "max_length": 3}).json()
    assert cut["results"][0]["text"] == "1 2"


# -- models that cannot load ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("exl3-missing", "The model folder for 'exl3-missing' is missing"),
        ("exl3-gptq", "is not an EXL3 model (quant_method 'gptq')"),
        ("exl3-broken", "exited with status 2): cannot load model: CUDA out of memory (fake)"),
    ],
)
def test_a_model_that_cannot_load_is_a_503_with_the_reason(client: httpx.Client, model: str, reason: str) -> None:
    reply = client.post("/v1/chat/completions", json={**chat_body("hi"), "model": model})
    assert reply.status_code == 503, reply.text
    error = reply.json()["error"]
    assert error["code"] == "model_load_failed"
    assert reason in error["message"]


@pytest.mark.skipif(
    importlib.util.find_spec("exllamav3") is not None,
    reason="exllamav3 is installed: this checks the gateway without it",
)
def test_without_the_exllamav3_package_a_request_gets_a_503_saying_what_is_missing(tmp_path: Path) -> None:
    models = [{"id": "real-exl3", "backend": "exllamav3", "path": str(write_folder(tmp_path / "m"))}]
    settings = Settings(data_dir=tmp_path / "data", auth=NO_AUTH, models=models)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SOMNER_EXL3_GENERATOR", raising=False)
        with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as client:
            reply = client.post("/v1/chat/completions", json={**chat_body("hi"), "model": "real-exl3"})
    assert reply.status_code == 503, reply.text
    message = reply.json()["error"]["message"]
    assert "(its engine exited with status 2): cannot load model: the exllamav3 engine needs the somner[exl3] " in (
        message
    )
    assert "extra and a CUDA GPU (" in message
