"""`keep_alive: 0` on real engines: the model's engine process is gone right after the request, streamed or not,
on the Ollama and OpenAI routes (as Ollama unloads a model at once when a request says so)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from somner.settings import Settings
from tests.conftest import link_model
from tests.inprocess import NO_AUTH, ThreadedGateway
from tests.integration.test_model_lifecycle import ENGINE, gone, pid_of, status

pytestmark = pytest.mark.integration

PROMPT = [{"role": "user", "content": "Hi"}]
PROMPTLY = 5.0
"""Seconds within which the engine process must have exited after the response ended (a worker stops in well
under a second; the model's own ttl here is an hour, so only keep_alive 0 can explain an exit)."""

REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai chat": ("/v1/chat/completions", {"messages": PROMPT, "max_tokens": 2, "keep_alive": 0}),
    "openai chat, streamed": (
        "/v1/chat/completions",
        {"messages": PROMPT, "max_tokens": 2, "keep_alive": 0, "stream": True},
    ),
    "openai completion, streamed": (
        "/v1/completions",
        {"prompt": "Hi", "max_tokens": 2, "keep_alive": "0s", "stream": True},
    ),
    "openai embeddings": ("/v1/embeddings", {"input": "Hi", "keep_alive": 0}),
    "ollama chat": ("/api/chat", {"messages": PROMPT, "stream": False, "options": {"num_predict": 2}, "keep_alive": 0}),
    "ollama chat, streamed": ("/api/chat", {"messages": PROMPT, "options": {"num_predict": 2}, "keep_alive": 0}),
    "ollama generate, streamed": ("/api/generate", {"prompt": "Hi", "options": {"num_predict": 2}, "keep_alive": "0"}),
}


def settings_for(tmp_path: Path, model_path: Path) -> Settings:
    link_model(model_path, tmp_path / "data" / "models", "alpha.gguf")
    return Settings(data_dir=tmp_path / "data", engine=ENGINE, auth=NO_AUTH, ttl="1h")  # type: ignore[arg-type]


def _load(client: httpx.Client) -> None:
    body = {"model": "alpha", "messages": PROMPT, "max_tokens": 1}
    assert client.post("/v1/chat/completions", json=body).status_code == 200


def _exit_after(client: httpx.Client, gateway: ThreadedGateway, path: str, body: dict[str, Any]) -> float:
    """Send the request (reading a stream to its end); seconds from the end of the response until the engine
    process that served it had exited."""
    pid = pid_of(gateway, "alpha")
    with client.stream("POST", path, json={"model": "alpha", **body}) as response:
        assert response.status_code == 200, response.read()
        for _ in response.iter_bytes():
            pass
    ended = time.monotonic()
    while not gone(pid):
        assert time.monotonic() - ended < PROMPTLY, f"engine {pid} still running {PROMPTLY}s after {path}"
        time.sleep(0.02)
    return time.monotonic() - ended


def test_keep_alive_zero_stops_the_engine_right_after_each_kind_of_request(tmp_path: Path, model_path: Path) -> None:
    with (
        ThreadedGateway(settings_for(tmp_path, model_path)) as gateway,
        httpx.Client(base_url=gateway.url, timeout=120) as client,
    ):
        for what, (path, body) in REQUESTS.items():
            _load(client)
            assert status(gateway, "alpha").state.value == "loaded", what
            waited = _exit_after(client, gateway, path, body)
            # (the manager records the exit a moment after the process is gone: give it until PROMPTLY)
            deadline = time.monotonic() + PROMPTLY
            while status(gateway, "alpha").state.value == "unloading" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert status(gateway, "alpha").state.value == "unloaded", what
            print(f"{what}: engine gone {waited:.2f}s after the response ended")


def test_keep_alive_zero_header_on_openai_and_a_request_without_it_keeps_the_model(
    tmp_path: Path, model_path: Path
) -> None:
    with (
        ThreadedGateway(settings_for(tmp_path, model_path)) as gateway,
        httpx.Client(base_url=gateway.url, timeout=120) as client,
    ):
        _load(client)
        pid = pid_of(gateway, "alpha")
        time.sleep(0.5)
        assert not gone(pid) and status(gateway, "alpha").state.value == "loaded"  # the ttl (1h) applies
        body = {"model": "alpha", "messages": PROMPT, "max_tokens": 2}
        answer = client.post("/v1/chat/completions", json=body, headers={"x-somner-keep-alive": "0"})
        assert answer.status_code == 200
        ended = time.monotonic()
        while not gone(pid):
            assert time.monotonic() - ended < PROMPTLY
            time.sleep(0.02)
