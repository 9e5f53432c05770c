"""`somner worker` as a process: its HTTP surface on a unix socket and TCP, and how it stops."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

pytestmark = pytest.mark.integration


def start_worker(model: Path, *args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "somner",
            "worker",
            "--model",
            str(model),
            "--ctx",
            "512",
            "--parallel",
            "2",
            "--threads",
            "2",
            *args,
        ],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def accepts(sock: Path | None) -> bool:
    """Whether a unix socket takes connections (probed with a socket we close: httpx's sync client leaks one
    when a unix-socket connect fails)."""
    if sock is None:
        return True
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(sock))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def wait_healthy(
    client: httpx.Client, process: subprocess.Popen[bytes], sock: Path | None = None, timeout: float = 60
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode() if process.stdout else "worker exited")
        if not accepts(sock):
            time.sleep(0.05)
            continue
        try:
            response = client.get("/health")
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("worker did not become healthy")


@pytest.fixture(scope="module")
def socket_worker(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path]]:
    sock = tmp_path_factory.mktemp("w") / "w.sock"
    process = start_worker(model_path, "--socket", str(sock), "--id", "tiny")
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://worker", timeout=60)
    with process:
        try:
            wait_healthy(client, process, sock)
            yield process, client, sock
        finally:
            client.close()
            process.kill()


def test_health_models_and_stats(socket_worker: tuple[subprocess.Popen[bytes], httpx.Client, Path]) -> None:
    process, client, _ = socket_worker
    health = client.get("/health").json()
    assert (
        health["status"] == "ok" and health["id"] == "tiny" and health["n_ctx"] == 512 and health["template"] == "gemma"
    )
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    stats = client.get("/stats").json()
    assert stats["pid"] == process.pid
    assert len(stats["slots"]) == 2


def test_generates_over_the_socket(socket_worker: tuple[subprocess.Popen[bytes], httpx.Client, Path]) -> None:
    _, client, _ = socket_worker
    body = client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0},
    ).json()
    assert body["usage"]["completion_tokens"] == 4
    assert body["timings"]["predicted_n"] == 4  # llama-server's extension
    too_long = client.post("/v1/completions", json={"model": "tiny", "prompt": "word " * 600})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"


def test_tokenize_round_trip(socket_worker: tuple[subprocess.Popen[bytes], httpx.Client, Path]) -> None:
    _, client, _ = socket_worker
    tokens = client.post("/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert client.post("/detokenize", json={"tokens": tokens}).json()["content"] == "Hello world"
    assert client.post("/tokenize", json={"content": 5}).status_code == 400
    assert client.post("/detokenize", json={"tokens": [10**9]}).status_code == 400
    assert client.post("/detokenize", content=b"{").status_code == 400


def test_tcp_port_and_sigterm(model_path: Path) -> None:
    port = free_port()
    with start_worker(model_path, "--port", str(port)) as process:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert wait_healthy(client, process)["id"] == model_path.stem
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_socket_is_removed_on_sigterm(model_path: Path, tmp_path: Path) -> None:
    sock = tmp_path / "x.sock"
    with start_worker(model_path, "--socket", str(sock)) as process:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://w") as client:
            wait_healthy(client, process, sock)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert not sock.exists()


def test_exits_when_its_parent_goes_away(model_path: Path, tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    with start_worker(model_path, "--socket", str(sock), "--exit-with-parent", stdin=subprocess.PIPE) as process:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://w") as client:
            wait_healthy(client, process, sock)
        assert process.stdin is not None
        process.stdin.close()  # what the kernel does when the gateway dies
        assert process.wait(timeout=20) == 0


def test_a_bad_model_file_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 64)
    with start_worker(bad, "--socket", str(tmp_path / "b.sock")) as process:
        assert process.wait(timeout=60) == 2
        assert process.stdout is not None
        assert "cannot load model" in process.stdout.read().decode()


def test_stats_separate_decode_from_python_work(
    socket_worker: tuple[subprocess.Popen[bytes], httpx.Client, Path],
) -> None:
    _, client, _ = socket_worker
    client.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 8, "ignore_eos": True})
    engine = client.get("/stats").json()["engine"]
    assert engine["steps"] > 0
    assert 0 < engine["decode_seconds"] <= engine["step_seconds"]


def test_gpu_options_run_on_the_cpu_with_one_clear_line(model_path: Path, tmp_path: Path) -> None:
    """The configuration of a GPU machine serves on a machine without one (this one): the engine says so once."""
    sock = tmp_path / "g.sock"
    gpu_flags = ["--split-mode", "row", "--tensor-split", "3,1", "--main-gpu", "1", "--flash-attn", "on"]
    gpu_flags += ["--cache-type-k", "q8_0", "--cache-type-v", "q4_0", "--gpu-layers", "-1"]
    with start_worker(model_path, "--socket", str(sock), *gpu_flags) as process:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://w", timeout=60) as client:
            wait_healthy(client, process, sock)
            body = {"model": "m", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
            reply = client.post("/v1/completions", json=body)
            assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 4
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert process.stdout is not None
        output = process.stdout.read().decode()
    assert output.count("runs on the CPU") == 1, output[-2000:]
