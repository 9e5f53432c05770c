"""`somner start`, `status`, `stop` and `restart` on the real model: a stream in flight when `stop` comes finishes,
its usage is recorded, new connections are refused during the drain, and the logs land in timestamped files."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from somner.cli.daemon_cmd import PID_FILE, process_alive, read_pid
from somner.store.db import Database, sqlite_url
from somner.store.usage import UsageRecord, UsageStore
from tests.conftest import link_model
from tests.servers import ADMIN_KEY, free_port

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
HEADERS = {"authorization": f"Bearer {ADMIN_KEY}"}


def somner(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMNER_")}
    env["SOMNER_ADMIN_KEY"] = ADMIN_KEY
    return subprocess.run(
        [sys.executable, "-m", "somner", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def usage_records(data_dir: Path) -> list[UsageRecord]:
    async def read() -> list[UsageRecord]:
        db = Database(sqlite_url(data_dir / "somner.db"))
        try:
            return await UsageStore(db).all()
        finally:
            await db.close()

    return asyncio.run(read())


class Stream(threading.Thread):
    """A streamed chat completion read in the background, long enough to be in flight when `stop` comes."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[bytes] = []
        self.started = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 300,
            "ignore_eos": True,
            "stream": True,
        }
        try:
            with httpx.stream(
                "POST", f"{self.url}/v1/chat/completions", json=body, headers=HEADERS, timeout=120
            ) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line.removeprefix("data: ").encode())
                        if len(self.events) >= 5:
                            self.started.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()


def test_start_status_stop_drains_a_stream_and_records_its_usage(model_path: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    link_model(model_path, data_dir / "models")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    started = somner("start", "--data-dir", str(data_dir), "--port", str(port))
    assert started.returncode == 0, started.stdout + started.stderr
    pid = read_pid(data_dir)
    assert pid is not None and process_alive(pid)
    try:
        shown = somner("status", "--data-dir", str(data_dir))
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert f"running (pid {pid})" in shown.stdout
        assert url in shown.stdout

        stream = Stream(url)
        stream.start()
        assert stream.started.wait(120) and stream.error is None, stream.error
        stopping = subprocess.Popen(
            [sys.executable, "-m", "somner", "stop", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("SOMNER_")},
        )
        refused = False
        while stream.is_alive() and not refused:  # during the drain, new connections are turned away
            try:
                refused = httpx.get(f"{url}/v1/models", headers=HEADERS, timeout=5).status_code == 503
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                refused = True  # (turned away at the socket: closed, or reset as the server shuts down)
            time.sleep(0.05)
        stream.join(120)
        output, _ = stopping.communicate(timeout=120)
        assert stopping.returncode == 0, output
        assert refused, "a new request was served while the server drained"
    finally:
        if process_alive(pid):
            os.kill(pid, 9)

    assert stream.error is None, stream.error
    assert stream.events[-1] == b"[DONE]"
    chunks = [orjson.loads(event) for event in stream.events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    generated = sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))
    assert generated > 5
    assert not process_alive(pid)
    assert not (data_dir / PID_FILE).exists()

    records = [r for r in usage_records(data_dir) if r.model == MODEL]
    assert len(records) == 1
    assert records[0].status == 200 and records[0].model == MODEL
    assert records[0].completion_tokens == 300 and not records[0].disconnected

    assert somner("status", "--data-dir", str(data_dir)).returncode == 3

    server_logs = sorted((data_dir / "logs").glob("*-server.log"))
    assert server_logs and all(re.fullmatch(r"\d{8}T\d{6}Z-server\.log", p.name) for p in server_logs)
    text = server_logs[-1].read_text()
    assert f"serving on http://127.0.0.1:{port}" in text
    assert "stopping: no new connections" in text
    worker_logs = list((data_dir / "logs").glob(f"*-worker-{MODEL}.log"))
    assert len(worker_logs) == 1 and "starting" in worker_logs[0].read_text()

    # restart starts it again with the options of the first start (same port); the usage is still there.
    restarted = somner("restart", "--data-dir", str(data_dir))
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    new_pid = read_pid(data_dir)
    assert new_pid is not None and new_pid != pid
    try:
        summary = httpx.get(f"{url}/admin/usage?by=model", headers=HEADERS, timeout=10).json()
        assert [(row["model"], row["completion_tokens"]) for row in summary["data"]] == [(MODEL, 300)]
    finally:
        stopped = somner("stop", "--data-dir", str(data_dir))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not process_alive(new_pid)


def test_start_fails_with_the_log_tail_when_the_server_cannot_start(tmp_path: Path) -> None:
    result = somner("start", "--data-dir", str(tmp_path), "--port", str(free_port()), "--model", "nothing-here")
    assert result.returncode == 1
    assert "exited with status 1" in result.stderr
    assert "nothing-here" in result.stderr  # serve's own error, from the log tail
    assert not (tmp_path / PID_FILE).exists()
    assert somner("status", "--data-dir", str(tmp_path)).returncode == 3
