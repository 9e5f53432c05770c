"""What the fault matrix (test_fault_matrix.py) needs: requests in each dialect, read in the background, how a
stream ended (the dialect's clean end, its error event, or a silent cut), usage rows read from the outside, and
the outcome table the matrix prints.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from somner.store.db import Database
from somner.store.usage import UsageRecord, UsageStore

Dialect = Literal["openai", "ollama", "anthropic"]
DIALECTS: tuple[Dialect, ...] = ("openai", "ollama", "anthropic")
Ending = Literal["clean", "error", "cut"]
NO_EOS = {"1": -100, "106": -100, "212": -100}  # keeps the base model talking (OpenAI's logit_bias)
COUNTING = "Count from 1 to 500: 1, 2, 3, 4, 5, 6, 7,"  # a prompt the base model keeps going on


def ask(dialect: Dialect, model: str, tokens: int) -> tuple[str, dict[str, Any]]:
    """A streamed request of about `tokens` tokens: the path and the body."""
    if dialect == "openai":
        body = {"model": model, "messages": [{"role": "user", "content": COUNTING}], "max_tokens": tokens}
        return "/v1/chat/completions", {**body, "stream": True, "logit_bias": NO_EOS}
    if dialect == "ollama":  # raw: the counting goes on without a chat turn to end
        return "/api/generate", {"model": model, "prompt": COUNTING, "raw": True, "options": {"num_predict": tokens}}
    body = {"model": model, "messages": [{"role": "user", "content": COUNTING}], "max_tokens": tokens}
    return "/v1/messages", {**body, "stream": True}


_TOKEN_MARKS: dict[Dialect, tuple[str, str]] = {  # (a line with generated text has this, and not that)
    "openai": ('"content":"', '"content":""'),
    "ollama": ('"response":"', '"response":""'),
    "anthropic": ('"text_delta"', '"text":""'),
}


def ending(dialect: Dialect, lines: list[str]) -> Ending:
    """How a stream ended: its dialect's clean end, its dialect's error event, or neither (a silent cut)."""
    lines = [line for line in lines if line and not line.startswith(":")]  # (keep-alive comments)
    if not lines:
        return "cut"
    if dialect == "openai":
        data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        if not data:
            return "cut"
        if data[-1] == "[DONE]":
            return "error" if any('"error"' in d for d in data) else "clean"
        return "error" if '"error"' in data[-1] else "cut"
    if dialect == "ollama":
        try:
            last = orjson.loads(lines[-1])
        except orjson.JSONDecodeError:
            return "cut"
        if "error" in last:
            return "error"
        return "clean" if last.get("done") is True else "cut"
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    if not events:
        return "cut"
    return {"message_stop": "clean", "error": "error"}.get(events[-1], "cut")  # type: ignore[return-value]


class Reader(threading.Thread):
    """One streamed request read in the background; `tokens_seen` counts lines with generated text."""

    def __init__(self, url: str, dialect: Dialect, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.dialect, self.path, self.body, self.headers = url, dialect, path, body, headers
        self.request_id = os.urandom(8).hex()
        self.lines: list[str] = []
        self.status = 0
        self.tokens_seen = 0
        self.failure: str | None = None  # the transport error that ended the read, if any
        self.text = ""  # the body of a response that is not a stream
        self._token = threading.Event()

    def run(self) -> None:
        mark, empty = _TOKEN_MARKS[self.dialect]
        headers = {**self.headers, "x-request-id": self.request_id}
        try:
            with httpx.stream("POST", self.url + self.path, json=self.body, headers=headers, timeout=120) as reply:
                self.status = reply.status_code
                if reply.status_code != 200:
                    self.text = reply.read().decode()
                    return
                for line in reply.iter_lines():
                    self.lines.append(line)
                    if mark in line and empty not in line:
                        self.tokens_seen += 1
                        self._token.set()
        except httpx.HTTPError as exc:
            self.failure = type(exc).__name__
        finally:
            self._token.set()

    def wait_tokens(self, count: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.tokens_seen < count and self.is_alive() and time.monotonic() < deadline:
            self._token.wait(0.05)
            self._token.clear()
        return self.tokens_seen >= count

    def finish(self, timeout: float = 90.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"{self.dialect} {self.path} still running after {timeout} s"

    @property
    def ending(self) -> Ending:
        return ending(self.dialect, self.lines) if self.failure is None else "cut"

    def outcome(self) -> str:
        """`clean` / `error` (streams), or `<status>:<error code>` (refused before the stream began)."""
        if self.status == 200:
            return self.ending
        return f"{self.status}:{error_code(self.text)}"


def error_code(text: str) -> str:
    """The error code (or type) of an error body in any dialect; `?` when there is none."""
    try:
        body = json.loads(text)
    except ValueError:
        return "?"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or "?")
    return "error" if isinstance(error, str) and error else "?"


def hang_up(url: str, path: str, body: dict[str, Any], headers: dict[str, str], after_bytes: int) -> str:
    """Send a streamed request over a raw socket and close it after reading `after_bytes` of the response (0:
    right after sending). Returns the request id."""
    request_id = os.urandom(8).hex()
    host, port = url.removeprefix("http://").split(":")
    payload = orjson.dumps(body)
    head = [f"POST {path} HTTP/1.1", f"host: {host}", "content-type: application/json"]
    head += [f"content-length: {len(payload)}", f"x-request-id: {request_id}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        received = 0
        while received < after_bytes:
            chunk = sock.recv(min(4096, after_bytes - received))
            if not chunk:
                break
            received += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
    return request_id


def usage_rows(url: str) -> list[UsageRecord]:
    """Every usage row, read over a connection of our own (the gateway's loop runs in another thread)."""

    async def read() -> list[UsageRecord]:
        db = Database(url)
        try:
            return await UsageStore(db).all()
        finally:
            await db.close()

    return asyncio.run(read())


def rows_by_request(url: str) -> Counter[str]:
    return Counter(row.request_id for row in usage_rows(url) if row.request_id is not None)


def settle_rows(url: str, admitted: set[str], maybe: set[str], timeout: float = 30.0) -> Counter[str]:
    """Wait until every admitted request has its usage row; then check that none has two, and that no row belongs
    to a request that was not sent (`maybe`: requests refused or cut early, which may or may not have one)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = rows_by_request(url)
        if all(counts[rid] >= 1 for rid in admitted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = sorted(rid for rid in admitted if counts[rid] == 0)
    doubled = sorted(rid for rid, n in counts.items() if n > 1)
    strangers = sorted(rid for rid in counts if rid not in admitted and rid not in maybe)
    assert not missing, f"admitted requests without a usage row: {missing}"
    assert not doubled, f"requests counted twice: {doubled}"
    assert not strangers, f"usage rows for requests never sent: {strangers}"
    return counts


@dataclass
class Matrix:
    """Outcome counts per fault kind, printed as a table when the session ends (and written as JSON to
    $SOMNER_FAULT_REPORT when set)."""

    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    trials: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, kind: str, *outcomes: str) -> None:
        self.outcomes.setdefault(kind, Counter()).update(outcomes)

    def table(self) -> str:
        lines = ["| fault | trials | seconds | outcomes |", "|---|---|---|---|"]
        for kind, counts in self.outcomes.items():
            shown = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
            lines.append(f"| {kind} | {self.trials[kind]} | {self.seconds.get(kind, 0):.0f} | {shown} |")
        return "\n".join(lines)

    def save(self, path: Path) -> None:
        data = {
            k: {"trials": self.trials[k], "seconds": self.seconds.get(k), "outcomes": dict(v)}
            for k, v in self.outcomes.items()
        }
        path.write_text(json.dumps(data, indent=2) + "\n")
