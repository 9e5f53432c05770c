"""The pass-through path to an `upstream` model keeps the gateway's duties: a real `somner serve` in front of the
zero-delay mock upstream (benchmarks/mock_upstream.py), with auth on.

A streamed chat leaves exactly one usage record with the upstream's token counts and moves the metrics by as
much, whether or not the client asked for the usage event; a key over its rate limit is refused before any
request reaches the upstream (the mock counts what it received).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.servers import ADMIN_KEY, ServeProcess, start_serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MOCK = ROOT / "benchmarks" / "mock_upstream.py"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
PROMPT = "one two three four five"  # the mock counts prompt tokens as words: 5
CHUNKS = 7


class MockUpstream:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def requests(self) -> int:
        """Requests the mock has answered (its own `/stats` excluded)."""
        return int(httpx.get(f"{self.url}/stats", timeout=5).json()["requests"])


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[MockUpstream]:
    process = subprocess.Popen([sys.executable, str(MOCK), "--port", "0"], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.search(r":(\d+)\s*$", line)
        assert match, f"the mock did not say where it listens: {line!r}"
        yield MockUpstream(process, int(match.group(1)))
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("upstream") / "data"
    data_dir.mkdir()
    config = data_dir / "config.yaml"
    entry = {"id": "remote", "urls": [mock_upstream.url], "upstream_model": "mock-upstream-name"}
    config.write_bytes(orjson.dumps({"models": [entry], "database": {"batch_interval": 0.05}}))
    server = start_serve(data_dir, "--config", str(config), ready_timeout=30)
    try:
        yield server
    finally:
        server.stop()


def new_key(server: ServeProcess, user: str, **rights: Any) -> tuple[str, str]:
    """A fresh key (secret, id) for `user`."""
    response = httpx.post(f"{server.url}/admin/keys", json={"user": user, **rights}, headers=ADMIN, timeout=10)
    assert response.status_code == 201, response.text
    body = response.json()
    return str(body["key"]), str(body["id"])


def metric(server: ServeProcess, name: str, **labels: str) -> float:
    """The sum of a Prometheus sample's values over the series whose labels include `labels`."""
    text = httpx.get(f"{server.url}/metrics", headers=ADMIN, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def usage_of(server: ServeProcess, key_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/admin/usage", params={"since": "1h", "by": "key"}, headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return [row for row in response.json()["data"] if row["key"] == key_id]


def stream_chat(server: ServeProcess, key: str, include_usage: bool) -> list[dict[str, Any]]:
    body: dict[str, Any] = {
        "model": "remote",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": CHUNKS,
        "stream": True,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    events: list[dict[str, Any]] = []
    headers = {"authorization": f"Bearer {key}"}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=10) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(orjson.loads(line[6:]))
    return events


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_streamed_chat_through_an_upstream_leaves_one_usage_record(
    gateway: ServeProcess, mock_upstream: MockUpstream, include_usage: bool
) -> None:
    key, key_id = new_key(gateway, f"streamer-{include_usage}", rpm=1000)
    before = {
        "requests": metric(
            gateway, "somner_requests_total", route="/v1/chat/completions", model="remote", status="200"
        ),
        "prompt": metric(gateway, "somner_prompt_tokens_total", model="remote"),
        "completion": metric(gateway, "somner_completion_tokens_total", model="remote"),
    }
    upstream_before = mock_upstream.requests()

    events = stream_chat(gateway, key, include_usage)

    assert mock_upstream.requests() == upstream_before + 1
    content = [e for e in events if e["choices"] and e["choices"][0].get("delta", {}).get("content")]
    assert len(content) == CHUNKS
    assert all(e["model"] == "remote" for e in events)  # the upstream's own name never reaches the client
    usage_events = [e for e in events if e.get("usage")]
    if include_usage:
        assert [e["usage"] for e in usage_events] == [
            {"prompt_tokens": 5, "completion_tokens": CHUNKS, "total_tokens": 5 + CHUNKS}
        ]
    else:
        assert usage_events == []
    rows = usage_of(gateway, key_id)
    assert len(rows) == 1
    assert (rows[0]["requests"], rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (1, 5, CHUNKS)
    assert rows[0]["errors"] == 0
    after_requests = metric(
        gateway, "somner_requests_total", route="/v1/chat/completions", model="remote", status="200"
    )
    assert after_requests - before["requests"] == 1
    assert metric(gateway, "somner_prompt_tokens_total", model="remote") - before["prompt"] == 5
    assert metric(gateway, "somner_completion_tokens_total", model="remote") - before["completion"] == CHUNKS


def test_a_rate_limited_key_is_refused_before_the_upstream_is_called(
    gateway: ServeProcess, mock_upstream: MockUpstream
) -> None:
    key, key_id = new_key(gateway, "limited", rpm=1)
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "remote", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
    url = f"{gateway.url}/v1/chat/completions"
    first = httpx.post(url, json=body, headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    assert first.json()["usage"]["completion_tokens"] == 3
    refused_before = metric(gateway, "somner_rejected_requests_total", reason="rate_limit")
    upstream_before = mock_upstream.requests()

    second = httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=10)

    assert second.status_code == 429, second.text
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(second.headers["retry-after"]) >= 1
    assert mock_upstream.requests() == upstream_before  # refused before any upstream call
    assert metric(gateway, "somner_rejected_requests_total", reason="rate_limit") - refused_before == 1
    rows = usage_of(gateway, key_id)
    assert [(r["requests"], r["completion_tokens"]) for r in rows] == [(1, 3)]  # the refusal is not a record


def connections(mock: MockUpstream) -> int:
    return int(httpx.get(f"{mock.url}/stats", timeout=5).json()["connections"])


@pytest.mark.parametrize("route", ["chat", "completions"])
def test_a_whole_answer_is_relayed_with_its_counts_and_the_clients_model_name(
    gateway: ServeProcess, mock_upstream: MockUpstream, route: str
) -> None:
    key, key_id = new_key(gateway, f"whole-{route}", rpm=1000)
    headers = {"authorization": f"Bearer {key}"}
    if route == "chat":
        body: dict[str, Any] = {"model": "remote", "messages": [{"role": "user", "content": PROMPT}]}
    else:
        body = {"model": "remote", "prompt": PROMPT}
    reply = httpx.post(
        f"{gateway.url}/v1/{'chat/' if route == 'chat' else ''}completions",
        json={**body, "max_tokens": 4},
        headers=headers,
        timeout=10,
    )

    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["model"] == "remote"
    assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    text = answer["choices"][0]["message"]["content"] if route == "chat" else answer["choices"][0]["text"]
    assert len(text.split()) == 4
    assert reply.headers["x-ratelimit-remaining-requests"] == "999"
    rows = usage_of(gateway, key_id)
    assert [(r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(1, 5, 4)]


def test_upstream_connections_are_reused(gateway: ServeProcess, mock_upstream: MockUpstream) -> None:
    key, _ = new_key(gateway, "reuse", rpm=1000)
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "remote", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
    before = connections(mock_upstream)
    with httpx.Client(headers=headers, timeout=10) as client:
        for stream in [False, True] * 10:
            assert client.post(f"{gateway.url}/v1/chat/completions", json={**body, "stream": stream}).status_code == 200
    # Twenty requests one after the other, streamed or not, over at most one new upstream connection (none when an
    # earlier test left one idle; the other new connection is this test's own call to /stats).
    assert connections(mock_upstream) - before <= 2
