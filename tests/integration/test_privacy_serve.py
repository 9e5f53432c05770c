"""`privacy: strict` in a real `somner serve`: its log file (and stderr) carry no per-request line, no client
address or user agent, and its engines are started without tracebacks; the same requests against a standard
server are logged, so the check can fail."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import link_model
from tests.servers import ServeProcess, start_serve

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
AGENT = "PrivacyProbe/1.0"
ADDRESS = "198.51.100.23"


def exercise(server: ServeProcess) -> list[str]:
    """A few requests (a chat, a 404, a listing); returns the engine's command line."""
    headers = {**server.headers, "user-agent": AGENT, "x-forwarded-for": ADDRESS}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=120).status_code == 200
    assert httpx.post(f"{server.url}/api/chat", json={"model": "nope"}, headers=headers, timeout=30).status_code == 404
    assert httpx.get(f"{server.url}/v1/models", headers=headers, timeout=30).status_code == 200
    return engine_argv(server.process.pid)


def engine_argv(gateway: int) -> list[str]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == gateway and "worker" in argv:
            return argv
    raise AssertionError("no engine process")


def logs_of(data_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in sorted((data_dir / "logs").glob("*.log"))}


@pytest.mark.parametrize("privacy", ["standard", "strict"])
def test_a_strict_server_logs_no_requests(tmp_path: Path, model_path: Path, privacy: str) -> None:
    data_dir = tmp_path / "data"
    link_model(model_path, data_dir / "models")
    server = start_serve(data_dir, env={"SOMNER_PRIVACY": privacy})
    try:
        argv = exercise(server)
        time.sleep(0.2)
    finally:
        assert server.stop() == 0
    logs = logs_of(data_dir)
    gateway = "".join(text for name, text in logs.items() if "-server" in name) + server.log()
    assert "starting engine for" in gateway  # the log is there, with what is not about one request
    request_lines = [line for line in gateway.splitlines() if "somner.requests" in line]
    engine_logs = [text for name, text in logs.items() if "worker-" in name]
    assert engine_logs
    for text in (gateway, *engine_logs):
        assert AGENT not in text and ADDRESS not in text
    assert ("--no-tracebacks" in argv) is (privacy == "strict")
    if privacy == "strict":
        assert request_lines == [], request_lines
    else:
        assert any("POST /v1/chat/completions" in line for line in request_lines), request_lines
        assert any(" 404 " in line for line in request_lines), request_lines
