"""Engine faults on the real engine over real HTTP: a killed engine loses no request that had not started, a hung
engine is found and replaced, a shutdown ends long streams with an error event (not a bare end of file), and
workers exit with a meaningful status."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from somner.models.backends.worker import WorkerBackend
from somner.settings import Settings
from tests.conftest import link_model
from tests.inprocess import NO_AUTH, ThreadedGateway
from tests.integration.test_daemon import usage_records
from tests.servers import ADMIN_KEY, start_serve

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
NO_EOS = {"1": -100, "106": -100, "212": -100}  # keep a base model talking until max_tokens
HI = [{"role": "user", "content": "Hi"}]


def settings_for(tmp_path: Path, model_path: Path, *, parallel: int = 2, **extra: Any) -> Settings:
    link_model(model_path, tmp_path / "data" / "models")
    engine = {"ctx": 2048, "parallel": parallel, "threads": 2, **extra.pop("engine", {})}
    return Settings(data_dir=tmp_path / "data", engine=engine, auth=NO_AUTH, **extra)  # type: ignore[arg-type]


def worker_pid(gateway: ThreadedGateway, timeout: float = 60) -> int:
    """The pid of the model's engine, once one is loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backend = gateway.services.manager.backend_of(MODEL)
        if isinstance(backend, WorkerBackend) and backend.pid is not None and backend.alive:
            return backend.pid
        time.sleep(0.02)
    raise AssertionError("no engine loaded")


def sse_data(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line.removeprefix("data: ")


# -- 1. kill -9, then a request at once --------------------------------------------------------------------


def _openai_chat(client: httpx.Client) -> None:
    reply = client.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, "max_tokens": 3})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1


def _openai_stream(client: httpx.Client) -> None:  # relayed as the engine's bytes (pass-through)
    body = {"model": MODEL, "messages": HI, "max_tokens": 3, "stream": True, "logit_bias": NO_EOS}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = list(sse_data(response))
    assert events[-1] == "[DONE]", events
    assert not any('"error"' in event for event in events), events
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text


def _ollama_stream(client: httpx.Client) -> None:  # decoded and re-encoded (core chunks)
    body = {"model": MODEL, "messages": HI, "options": {"num_predict": 3}}
    with client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200
        lines = [orjson.loads(line) for line in response.iter_lines() if line]
    assert lines[-1]["done"] is True and "error" not in lines[-1], lines
    assert lines[-1]["eval_count"] == 3


def _anthropic(client: httpx.Client) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 3}
    reply = client.post("/v1/messages", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["output_tokens"] == 3


def _completion(client: httpx.Client) -> None:
    reply = client.post("/v1/completions", json={"model": MODEL, "prompt": "Once", "max_tokens": 2})
    assert reply.status_code == 200, reply.text


def _tokenize(client: httpx.Client) -> None:
    reply = client.post("/tokenize", json={"model": MODEL, "content": "Hello world"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["tokens"]


def _kobold(client: httpx.Client) -> None:
    reply = client.post("/api/v1/generate", json={"prompt": "Once", "max_length": 2})
    assert reply.status_code == 200, reply.text
    assert reply.json()["results"][0]["text"] is not None


ASKS: list[Callable[[httpx.Client], None]] = [
    _openai_chat,
    _openai_stream,
    _ollama_stream,
    _anthropic,
    _completion,
    _tokenize,
    _kobold,
]


def test_a_request_right_after_the_engine_is_killed_runs_on_a_fresh_engine(tmp_path: Path, model_path: Path) -> None:
    settings = settings_for(tmp_path, model_path, model=MODEL)
    with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as client:
        _openai_chat(client)  # warm: a kept-alive connection to the engine sits in the pool
        pids: list[int] = []
        for trial in range(21):
            victim = worker_pid(gateway)
            assert victim not in pids
            pids.append(victim)
            os.kill(victim, signal.SIGKILL)
            ASKS[trial % len(ASKS)](client)  # at once: the manager has not noticed the death yet
        loads = {s.id: s.loads for s in gateway.services.manager.statuses()}[MODEL]
        assert loads == 22  # one fresh engine per kill: no restart storm, no request lost


def test_a_lost_engine_that_cannot_be_replaced_is_a_502_with_retry_after(tmp_path: Path, model_path: Path) -> None:
    settings = settings_for(tmp_path, model_path, model=MODEL)
    with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as client:
        os.kill(worker_pid(gateway), signal.SIGKILL)
        (tmp_path / "data" / "models" / f"{MODEL}.gguf").unlink()  # the fresh engine cannot start
        reply = client.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, "max_tokens": 3})
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "model_load_failed"
        assert int(reply.headers["retry-after"]) >= 1


# -- 2. a hung engine -----------------------------------------------------------------------------------------


class Reader(threading.Thread):
    """Reads one streamed request in the background, keeping every line (keep-alive comments included)."""

    def __init__(self, url: str, path: str, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.body = url, path, body
        self.lines: list[str] = []
        self.status = 0
        self.first = threading.Event()  # a generated token arrived
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + self.path, json=self.body, timeout=120) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    self.lines.append(line)
                    if '"content":"' in line and '"content":""' not in line:
                        self.first.set()
        finally:
            self.ended_at = time.monotonic()
            self.first.set()


def test_a_hung_engine_is_killed_and_replaced(tmp_path: Path, model_path: Path) -> None:
    hang = 3.0
    settings = settings_for(
        tmp_path, model_path, parallel=1, model=MODEL, engine={"hang_timeout": hang}, stream_keepalive=0.5
    )
    with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as client:
        long_stream = {"model": MODEL, "messages": HI, "max_tokens": 3000, "logit_bias": NO_EOS, "stream": True}
        running = Reader(gateway.url, "/v1/chat/completions", long_stream)
        running.start()
        assert running.first.wait(60)
        # One slot: this one waits in the engine's queue, with no token yet, when the engine freezes.
        queued = Reader(gateway.url, "/v1/chat/completions", {**long_stream, "max_tokens": 5})
        queued.start()
        time.sleep(0.5)
        victim = worker_pid(gateway)
        os.kill(victim, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            outage: list[dict[str, Any]] = []
            while running.is_alive() and time.monotonic() - frozen_at < 30:
                ready = client.get("/ready")
                if ready.status_code == 503:
                    outage.append(ready.json())
                time.sleep(0.1)
            running.join(30)
            assert not running.is_alive()
            # The running stream ends with an error event within the watchdog's limit (+ a beat or two).
            assert running.ended_at - frozen_at < hang + 4, running.ended_at - frozen_at
            data = [line.removeprefix("data: ") for line in running.lines if line.startswith("data: ")]
            assert '"error"' in data[-1] and "[DONE]" not in data, data[-3:]
            assert ": keep-alive" in running.lines  # while the engine was silent, proxies saw the stream alive
            assert outage and any(MODEL in reason for o in outage for reason in o["reasons"]), outage
            # The queued request had no token: it ran on the fresh engine and finished normally.
            queued.join(60)
            queued_data = [line.removeprefix("data: ") for line in queued.lines if line.startswith("data: ")]
            assert queued.status == 200 and queued_data[-1] == "[DONE]", queued_data[-3:]
            assert not any('"error"' in d for d in queued_data)
        finally:
            with contextlib.suppress(ProcessLookupError):  # (gone once it was killed)
                os.kill(victim, signal.SIGCONT)
        replacement = worker_pid(gateway)
        assert replacement != victim
        assert client.get("/ready").status_code == 200
        assert client.get("/health").json()["models"][MODEL]["health"] == "ok"
        _ollama_stream(client)
        # The server releases a stream's lease once its last bytes are sent, a moment after the client read them.
        deadline = time.monotonic() + 5
        while (status := {s.id: s for s in gateway.services.manager.statuses()}[MODEL]).in_flight and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert status.loads == 2 and status.in_flight == 0, status


# -- 3. shutdown with long streams ------------------------------------------------------------------------------


def test_streams_still_running_at_the_drain_deadline_end_with_an_error_event(tmp_path: Path, model_path: Path) -> None:
    data_dir = tmp_path / "data"
    link_model(model_path, data_dir / "models")
    server = start_serve(data_dir, "--model", MODEL, env={"SOMNER_DRAIN_TIMEOUT": "2", "SOMNER_ENGINE__PARALLEL": "4"})
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    long_chat = {"model": MODEL, "messages": HI, "max_tokens": 3000, "logit_bias": NO_EOS}
    results: dict[str, list[str] | httpx.Response] = {}
    started = {name: threading.Event() for name in ("openai", "ollama", "anthropic")}

    def stream(name: str, path: str, body: dict[str, Any]) -> None:
        lines: list[str] = []
        with httpx.stream("POST", server.url + path, json=body, headers=headers, timeout=120) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                if len(lines) > 8:  # (past the opening events: tokens are coming)
                    started[name].set()
        results[name] = lines

    def whole(name: str, path: str, body: dict[str, Any]) -> None:
        results[name] = httpx.post(server.url + path, json=body, headers=headers, timeout=120)

    jobs = [
        threading.Thread(target=stream, args=("openai", "/v1/chat/completions", {**long_chat, "stream": True})),
        threading.Thread(target=stream, args=("ollama", "/api/chat", {**long_chat, "options": {"num_predict": 3000}})),
        threading.Thread(target=stream, args=("anthropic", "/v1/messages", {**long_chat, "stream": True})),
        threading.Thread(target=whole, args=("whole", "/v1/chat/completions", long_chat)),
    ]
    try:
        for job in jobs:
            job.start()
        for name, event in started.items():  # all four are generating (the whole answer beside the streams)
            assert event.wait(90), f"{name} never started"
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        for job in jobs:
            job.join(60)
        assert server.process.wait(60) == 0
    finally:
        server.stop()

    openai = results["openai"]
    assert isinstance(openai, list)
    assert "shutting down" in openai[-1] and '"error"' in openai[-1] and "[DONE]" not in openai[-1], openai[-2:]
    ollama = results["ollama"]
    assert isinstance(ollama, list)
    assert "shutting down" in orjson.loads(ollama[-1])["error"], ollama[-2:]
    anthropic = results["anthropic"]
    assert isinstance(anthropic, list)
    assert anthropic[-2] == "event: error" and "shutting down" in anthropic[-1], anthropic[-3:]
    whole_reply = results["whole"]
    assert isinstance(whole_reply, httpx.Response)
    assert whole_reply.status_code == 503 and "shutting down" in whole_reply.json()["error"]["message"]

    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert "drain deadline reached" in log
    ended = [line for line in log.splitlines() if f"POST /v1/chat/completions {MODEL} " in line]
    assert ended and all(" 503 " in line for line in ended), ended  # the server ended them: not 499
    records = [r for r in usage_records(data_dir) if r.model == MODEL]
    assert len(records) == 4
    assert all(r.status == 503 and not r.disconnected for r in records), records
    assert all(r.completion_tokens > 0 for r in records), records  # what was generated is charged


# -- 4. worker exits --------------------------------------------------------------------------------------------


def start_worker(model: Path, sock: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "somner", "worker", "--model", str(model), "--socket", str(sock)]
    command += ["--ctx", "512", "--parallel", "1", "--threads", "2", "--exit-with-parent"]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_worker_ready(process: subprocess.Popen[bytes], sock: Path) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://w") as client:
        while True:
            assert time.monotonic() < deadline and process.poll() is None
            try:
                if sock.exists() and client.get("/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)


def test_a_worker_stopped_normally_exits_with_0(model_path: Path, tmp_path: Path) -> None:
    """Idle, it is gone at once (a model swap waits for it): no shutdown polling, its socket removed."""
    sock = tmp_path / "w.sock"
    with start_worker(model_path, sock) as process:
        wait_worker_ready(process, sock)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)  # its stdin (the gateway's pipe) still open, as under the gateway
        assert process.wait(timeout=30) == 0
        took = time.monotonic() - signalled
        assert process.stdout is not None
        output = process.stdout.read()
    assert b"Fatal Python error" not in output and b"stopped while idle" in output
    assert took < 1.0 and not sock.exists()


def test_a_busy_worker_finishes_its_stream_before_it_exits(model_path: Path, tmp_path: Path) -> None:
    sock = tmp_path / "w.sock"
    body = {"model": MODEL, "prompt": "Once", "max_tokens": 40, "logit_bias": NO_EOS, "stream": True}
    with start_worker(model_path, sock) as process:
        wait_worker_ready(process, sock)
        with (
            httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://w", timeout=60) as client,
            client.stream("POST", "/v1/completions", json=body) as response,
        ):
            lines = response.iter_lines()
            events = [next(lines) for _ in range(3)]  # (generating)
            process.send_signal(signal.SIGTERM)
            events += list(lines)
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        output = process.stdout.read()
    data = [e.removeprefix("data: ") for e in events if e.startswith("data: ")]
    assert data[-1] == "[DONE]" and not any('"error"' in d for d in data)  # (drained: the stream ended whole)
    assert b"stopped while idle" not in output


def test_a_worker_that_cannot_load_says_why_and_exits_with_2(tmp_path: Path) -> None:
    hollow = tmp_path / "hollow.gguf"
    hollow.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    with start_worker(hollow, tmp_path / "h.sock") as process:
        assert process.wait(timeout=60) == 2
        assert process.stdout is not None
        output = process.stdout.read().decode()
    assert "somner worker: cannot load model" in output and "Fatal Python error" not in output
