"""The gateway with real engine workers: client disconnects, engine crashes, process hygiene."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from somner.models.backends.worker import WorkerBackend
from somner.settings import Settings
from tests.conftest import link_model
from tests.inprocess import NO_AUTH, ThreadedGateway
from tests.servers import free_port, start_serve

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
NO_EOS = {"1": -100, "106": -100, "212": -100}  # keep a base model talking until max_tokens


def settings_for(tmp_path: Path, model_path: Path) -> Settings:
    link_model(model_path, tmp_path / "data" / "models")
    return Settings(data_dir=tmp_path / "data", engine={"ctx": 4096, "parallel": 2, "threads": 2}, auth=NO_AUTH)  # type: ignore[arg-type]


def worker_of(gateway: ThreadedGateway) -> WorkerBackend:
    backend = gateway.services.manager.backend_of(MODEL)
    assert isinstance(backend, WorkerBackend)
    return backend


def engine_stats(backend: WorkerBackend) -> dict[str, int]:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(backend.socket_path))
    finally:
        probe.close()
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(backend.socket_path)), base_url="http://w") as client:
        stats: dict[str, int] = client.get("/stats").json()["engine"]
        return stats


def process_gone(pid: int) -> bool:
    """True when the process no longer exists at all (not even as an unreaped zombie)."""
    return not Path(f"/proc/{pid}").exists()


def wait_until(condition: object, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


def long_stream_request() -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 3000,
        "logit_bias": NO_EOS,
        "stream": True,
    }


def test_client_disconnect_stops_generation_within_a_second(tmp_path: Path, model_path: Path) -> None:
    with ThreadedGateway(settings_for(tmp_path, model_path)) as gateway:
        with (
            httpx.Client(base_url=gateway.url, timeout=60) as client,
            client.stream("POST", "/v1/chat/completions", json=long_stream_request()) as response,
        ):
            assert response.status_code == 200
            received = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received += 1
                if received >= 8:
                    break
        # Leaving the block closed the connection mid-stream.
        backend = worker_of(gateway)
        elapsed = wait_until(lambda: engine_stats(backend)["active"] == 0, timeout=5)
        assert elapsed < 1.0
        stats = engine_stats(backend)
        assert stats["cancelled"] == 1
        time.sleep(0.3)
        assert engine_stats(backend)["generated_tokens"] == stats["generated_tokens"]
        assert stats["generated_tokens"] < 200
        statuses = {s.id: s for s in gateway.services.manager.statuses()}
        assert statuses[MODEL].in_flight == 0


def test_non_streamed_disconnect_also_cancels(tmp_path: Path, model_path: Path) -> None:
    with ThreadedGateway(settings_for(tmp_path, model_path)) as gateway:
        gateway_client = httpx.Client(base_url=gateway.url, timeout=60)
        gateway_client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 1})
        backend = worker_of(gateway)
        body = {**long_stream_request(), "stream": False}
        with pytest.raises(httpx.ReadTimeout):
            gateway_client.post("/v1/chat/completions", json=body, timeout=1.5)
        gateway_client.close()
        wait_until(lambda: engine_stats(backend)["active"] == 0, timeout=3)
        assert engine_stats(backend)["cancelled"] == 1


def test_worker_killed_mid_stream(tmp_path: Path, model_path: Path) -> None:
    with ThreadedGateway(settings_for(tmp_path, model_path)) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a very long story."}],
            max_tokens=3000,
            logit_bias=NO_EOS,
            stream=True,
        )
        chunks = iter(stream)
        for _ in range(5):
            next(chunks)
        victim = worker_of(gateway).pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(openai.APIError) as info:
            for _ in chunks:
                pass
        assert "engine" in str(info.value.message)
        assert httpx.get(f"{gateway.url}/v1/models").status_code == 200
        answer = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0
        )
        assert answer.usage is not None and answer.usage.completion_tokens == 4
        replacement = worker_of(gateway).pid
        assert replacement not in (None, victim)
        wait_until(lambda: process_gone(victim), timeout=5)
    assert replacement is not None
    wait_until(lambda: process_gone(replacement), timeout=15)  # stopped with the gateway, and reaped


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_serve_leaves_no_engine_behind(tmp_path: Path, model_path: Path, how: str) -> None:
    link_model(model_path, tmp_path / "data" / "models")
    server = start_serve(tmp_path / "data", "--model", MODEL)  # loads the model at start
    try:
        workers = child_pids(server.process.pid)
        assert len(workers) == 1
        if how == "sigterm":
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(30) == 0
        else:
            server.process.kill()
            server.process.wait(30)
        wait_until(lambda: process_gone(workers[0]), timeout=20)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    assert isinstance(server.process, subprocess.Popen)


def test_broken_models_fail_clearly_without_a_retry_storm(tmp_path: Path, model_path: Path) -> None:
    settings = settings_for(tmp_path, model_path)
    models = tmp_path / "data" / "models"
    (models / "not-gguf.gguf").write_bytes(b"PK\x03\x04 a zip file")
    # A valid header but no tensors: passes the header check, then llama.cpp refuses it in the worker.
    (models / "hollow.gguf").write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as client:
        # The worker's own verdict and its real exit status (not an abort at its exit) say why.
        hollow = "could not be loaded (its engine exited with status 2): cannot load model"
        for name, reason in (("not-gguf", "not a GGUF file"), ("hollow", hollow)):
            body = {"model": name, "messages": [{"role": "user", "content": "x"}]}
            first = client.post("/v1/chat/completions", json=body)
            assert first.status_code == 503
            error = first.json()["error"]
            assert error["code"] == "model_load_failed"
            assert reason in error["message"]
            assert "Traceback" not in first.text
            again = client.post("/v1/chat/completions", json=body)
            assert again.status_code == 503
            assert int(again.headers["retry-after"]) >= 1  # backing off, not restarting at once
        statuses = {s.id: s.state.value for s in gateway.services.manager.statuses()}
        assert statuses["not-gguf"] == statuses["hollow"] == "failed"
        ok = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 1})
        assert ok.status_code == 200  # the gateway keeps serving the good model


def test_bad_requests_do_not_disturb_running_streams(tmp_path: Path, model_path: Path) -> None:
    import threading

    with ThreadedGateway(settings_for(tmp_path, model_path)) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        counts: dict[int, int] = {}
        started = threading.Barrier(3)

        def stream(i: int) -> None:
            chunks = client.completions.create(
                model=MODEL,
                prompt=f"{i}. A story:",
                max_tokens=60,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            first = True
            for chunk in chunks:
                if first:
                    started.wait()
                    first = False
                if chunk.usage is not None:
                    counts[i] = chunk.usage.completion_tokens

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        started.wait()  # both streams are running
        with pytest.raises(openai.BadRequestError) as too_long:
            client.completions.create(model=MODEL, prompt="word " * 5000, max_tokens=4)
        assert too_long.value.code == "context_length_exceeded"
        with pytest.raises(openai.BadRequestError) as bad_grammar:
            client.completions.create(model=MODEL, prompt="x", max_tokens=4, extra_body={"grammar": "root ::= ("})
        assert bad_grammar.value.code == "invalid_grammar"
        for thread in threads:
            thread.join(120)
        assert counts == {0: 60, 1: 60}


def test_health_port_and_metrics_of_a_real_server(tmp_path: Path, model_path: Path) -> None:
    link_model(model_path, tmp_path / "data" / "models")
    health_port = free_port()
    server = start_serve(tmp_path / "data", "--model", MODEL, "--health-port", str(health_port))
    try:
        health = f"http://127.0.0.1:{health_port}"
        assert httpx.get(f"{health}/ready", timeout=5).json() == {"ready": True}
        assert httpx.get(f"{health}/health", timeout=5).json()["loaded_models"] == [MODEL]
        assert httpx.get(f"{health}/v1/models", timeout=5).status_code == 404
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "logit_bias": NO_EOS}
        for _ in range(2):
            answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=server.headers, timeout=60)
            assert answer.json()["usage"]["completion_tokens"] == 4
        assert httpx.get(f"{server.url}/metrics", timeout=5).status_code == 401
        text = httpx.get(f"{server.url}/metrics", headers=server.headers, timeout=5).text
        route = 'dialect="openai",model="gemma-3-270m-q4_k_m",route="/v1/chat/completions",status="200"'
        assert f"somner_requests_total{{{route}}} 2.0" in text
        assert f'somner_completion_tokens_total{{model="{MODEL}"}} 8.0' in text
        assert f'somner_model_load_duration_seconds_count{{model="{MODEL}"}} 1.0' in text
        assert "somner_engine_slots_busy" in text and "somner_model_memory_bytes" in text
    finally:
        server.stop()
