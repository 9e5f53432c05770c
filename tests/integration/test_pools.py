"""Must-show 3 of issue 9: a pool of three real HTTP engines (fake ones, in their own processes) behind a real
gateway, 16 clients streaming; one engine is killed mid-run and brought back.

No request fails that had not started streaming (failover before the first chunk), the streams that were running
on the killed engine end with an error event, and traffic returns to the engine once it passes its health checks
(seen both in the engine's own request count and in `/admin/backends`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from somner.settings import Settings
from tests.fakes.engine_server import EngineServer
from tests.inprocess import NO_AUTH, ThreadedGateway

pytestmark = pytest.mark.integration

CLIENTS = 16
TOKENS = 12
DELAY_MS = 25  # a stream lasts ~0.3 s: a few are always running on every member


@pytest.fixture
def engines() -> Iterator[list[EngineServer]]:
    servers = [EngineServer(delay_ms=DELAY_MS) for _ in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.close()


@dataclass
class Tally:
    ok: int = 0
    failed_while_streaming: int = 0
    failed_before_streaming: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def stream_once(client: httpx.Client, tally: Tally) -> None:
    body = {"model": "pooled", "messages": [{"role": "user", "content": "hi"}], "max_tokens": TOKENS, "stream": True}
    content = 0
    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}: {response.read()[:200]!r}")
            done = False
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    done = True
                    break
                event = orjson.loads(data)
                if "error" in event:
                    raise RuntimeError(f"error event: {event['error']}")
                if any(choice.get("delta", {}).get("content") for choice in event.get("choices", [])):
                    content += 1
            if not done or content != TOKENS:
                raise RuntimeError(f"incomplete stream: {content} tokens, done={done}")
    except (RuntimeError, httpx.HTTPError) as exc:
        with tally.lock:
            if content:
                tally.failed_while_streaming += 1
            else:
                tally.failed_before_streaming.append(str(exc))
        return
    with tally.lock:
        tally.ok += 1


def members(gateway: ThreadedGateway) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/admin/backends", timeout=5)
    assert response.status_code == 200, response.text
    (pool,) = response.json()["data"]
    return {m["name"]: m for m in pool["members"]}


def test_a_member_killed_mid_run_fails_nothing_that_had_not_started(
    tmp_path: Path, engines: list[EngineServer]
) -> None:
    pool = {
        # Slow to notice on purpose: for about a second requests still go to the dead member and must fail over.
        "check_interval": "0.3s",
        "check_timeout": "1s",
        "healthy_threshold": 2,
        "unhealthy_threshold": 3,
        "eject_after": 50,
        "eject_cooldown": "0.5s",
        "connect_timeout": "2s",
        "first_token_timeout": "5s",
    }
    entry = {"id": "pooled", "backends": [{"url": e.url} for e in engines], "pool": pool}
    settings = Settings.model_validate(
        {"data_dir": tmp_path / "data", "auth": NO_AUTH, "models": [entry], "preload": ["pooled"]}
    )
    victim = engines[1]
    tally = Tally()
    with ThreadedGateway(settings) as gateway:
        stop = threading.Event()

        def client_loop() -> None:
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                while not stop.is_set():
                    stream_once(client, tally)

        threads = [threading.Thread(target=client_loop, name=f"client-{i}") for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            served_before_kill = victim.chat_requests()
            victim.kill()
            time.sleep(1.5)  # the pool runs on two members
            down = members(gateway)[victim.url]
            victim.start()
            deadline = time.monotonic() + 10
            while members(gateway)[victim.url]["state"] != "up":
                assert time.monotonic() < deadline, "the member never came back up"
                time.sleep(0.1)
            time.sleep(1.5)  # traffic again on all three
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        after = members(gateway)
        served_after_return = victim.chat_requests()  # the restarted process counts from zero

    print(f"ok={tally.ok} failed_while_streaming={tally.failed_while_streaming} victim={after[victim.url]}")
    assert tally.failed_before_streaming == []
    assert served_before_kill > 10
    assert down["state"] in ("down", "ejected") and down["recent_errors"]
    assert after[victim.url]["retried_elsewhere"] > 0  # requests that met the dead member were failed over
    assert served_after_return > 10
    assert tally.ok > 100
    assert after[victim.url]["requests"] > served_before_kill + served_after_return - 1
    assert all(m["in_flight"] == 0 for m in after.values())
    others = [after[e.url]["failures"] for e in engines if e is not victim]
    assert others == [0, 0]
