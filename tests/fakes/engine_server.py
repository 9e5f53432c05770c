"""A real HTTP fake engine in its own process, which a test can kill and bring back on the same port.

It runs `benchmarks/mock_upstream.py` (an OpenAI-compatible server: `/v1/models`, `/v1/chat/completions`, SSE
streams with a configurable pause between content events, and `/stats` with the requests it answered by path).
A restarted server is a new process: its counts start again from zero.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.servers import free_port

MOCK = Path(__file__).resolve().parents[2] / "benchmarks" / "mock_upstream.py"


class EngineServer:
    def __init__(self, *, delay_ms: float = 0.0, chunks: int = 16) -> None:
        self.port = free_port()
        self.delay_ms = delay_ms
        self.chunks = chunks
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart) the server on its port; returns once it listens."""
        command = [sys.executable, str(MOCK), "--port", str(self.port), "--delay-ms", str(self.delay_ms)]
        command += ["--chunks", str(self.chunks)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not re.search(rf":{self.port}\s*$", line):
            process.kill()
            process.wait(10)
            raise RuntimeError(f"the fake engine did not start on port {self.port}: {line!r}")
        self._process = process

    def kill(self) -> None:
        """SIGKILL: open streams break off, new connections are refused."""
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()

    def chat_requests(self) -> int:
        """Chat requests this process has answered (health probes not counted)."""
        stats = httpx.get(f"{self.url}/stats", timeout=5).json()
        return int(stats["by_path"].get("/v1/chat/completions", 0))

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
