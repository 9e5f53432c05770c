"""Three `somner serve` replicas on one PostgreSQL and one Redis, in front of the mock upstream
(benchmarks/mock_upstream.py): one rate limit and one concurrency limit per key across the replicas, a revocation
reaching every replica within `auth.cache_ttl`, and a Redis outage (on_error: closed) survived.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.pg import PostgresCluster
from tests.redis_server import RedisServer
from tests.servers import ADMIN_KEY, ServeProcess, start_serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MOCK = ROOT / "benchmarks" / "mock_upstream.py"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CACHE_TTL = 1.0
SLOW_CHUNKS, SLOW_DELAY_MS = 6, 50.0  # a slow stream lasts about 0.3 s


class MockUpstream:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, str(MOCK), "--port", "0", *args], stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        match = re.search(r":(\d+)\s*$", line)
        assert match, f"the mock did not say where it listens: {line!r}"
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def chats(self) -> int:
        by_path = httpx.get(f"{self.url}/stats", timeout=5).json()["by_path"]
        return int(by_path.get("/v1/chat/completions", 0))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Cluster:
    replicas: list[ServeProcess]
    redis: RedisServer
    fast: MockUpstream
    slow: MockUpstream


def wait_ready(server: ServeProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"somner serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"somner serve did not start:\n{server.log()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    postgres = PostgresCluster()
    redis = RedisServer()
    postgres.start()
    redis.start()
    fast = MockUpstream()
    slow = MockUpstream("--delay-ms", str(SLOW_DELAY_MS))
    replicas: list[ServeProcess] = []
    try:
        config = {
            "models": [{"id": "remote", "urls": [fast.url]}, {"id": "slow", "urls": [slow.url]}],
            "database": {"url": postgres.create_database(), "batch_interval": 0.1},
            "auth": {"cache_ttl": CACHE_TTL},
        }
        base = tmp_path_factory.mktemp("replicas")
        path = base / "config.yaml"
        path.write_bytes(orjson.dumps(config))
        env = {"SOMNER_REDIS__URL": redis.url, "SOMNER_REDIS__ON_ERROR": "closed"}
        # The first replica creates the schema and the admin key; the others find them.
        replicas.append(start_serve(base / "r0", "--config", str(path), env=env, ready_timeout=60))
        for i in (1, 2):
            replicas.append(start_serve(base / f"r{i}", "--config", str(path), env=env, wait=False))
        for replica in replicas[1:]:
            wait_ready(replica)
        yield Cluster(replicas, redis, fast, slow)
    finally:
        for replica in replicas:
            replica.stop()
        fast.stop()
        slow.stop()
        redis.remove()
        postgres.remove()


def new_key(server: ServeProcess, **rights: Any) -> tuple[str, str]:
    response = httpx.post(f"{server.url}/admin/keys", json={"user": "replicas", **rights}, headers=ADMIN, timeout=10)
    assert response.status_code == 201, response.text
    body = response.json()
    return str(body["key"]), str(body["id"])


def chat(server: ServeProcess, key: str, model: str = "remote") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    return httpx.post(
        f"{server.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def spread(cluster: Cluster, key: str, count: int) -> list[int]:
    """`count` chats sent round-robin over the replicas, 15 at a time; their statuses in order."""
    replicas = cluster.replicas
    with ThreadPoolExecutor(15) as pool:
        return list(pool.map(lambda i: chat(replicas[i % len(replicas)], key).status_code, range(count)))


def test_one_rate_limit_across_replicas(cluster: Cluster) -> None:
    key, _ = new_key(cluster.replicas[0], rpm=30)
    before = cluster.fast.chats()
    statuses = spread(cluster, key, 150)
    assert statuses.count(200) == 30, statuses
    assert statuses.count(429) == 120, statuses
    assert cluster.fast.chats() - before == 30  # refused requests never reached the upstream


def test_max_concurrent_holds_across_replicas(cluster: Cluster) -> None:
    key, _ = new_key(cluster.replicas[0], max_concurrent=2)
    spans: list[tuple[float, float]] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def stream(i: int) -> None:
        server = cluster.replicas[i % 3]
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": SLOW_CHUNKS}
        headers = {"authorization": f"Bearer {key}"}
        with httpx.stream(
            "POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}, headers=headers, timeout=30
        ) as response:
            chunks = response.iter_bytes()
            next(chunks, b"")
            first = time.monotonic()  # streaming: admitted and holding a slot
            for _ in chunks:
                pass
            with lock:
                spans.append((first, time.monotonic()))
                statuses.append(response.status_code)

    started = time.monotonic()
    with ThreadPoolExecutor(9) as pool:
        list(pool.map(stream, range(9)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 9
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 2, spans
    one = SLOW_CHUNKS * SLOW_DELAY_MS / 1000.0
    assert elapsed >= 4 * one, elapsed  # nine streams two at a time: at least five rounds (three replicas alone: two)


def test_revocation_reaches_every_replica_within_the_cache_ttl(cluster: Cluster) -> None:
    key, key_id = new_key(cluster.replicas[0])
    headers = {"authorization": f"Bearer {key}"}
    for replica in cluster.replicas:  # every replica now caches the key as valid
        assert httpx.get(f"{replica.url}/v1/models", headers=headers, timeout=10).status_code == 200
    revoked = httpx.delete(f"{cluster.replicas[1].url}/admin/keys/{key_id}", headers=ADMIN, timeout=10)
    assert revoked.status_code == 200, revoked.text
    started = time.monotonic()
    assert httpx.get(f"{cluster.replicas[1].url}/v1/models", headers=headers, timeout=10).status_code == 401
    refused_after: dict[int, float] = {}
    while len(refused_after) < 2 and time.monotonic() - started < CACHE_TTL + 2:
        for i in (0, 2):
            if i not in refused_after:
                response = httpx.get(f"{cluster.replicas[i].url}/v1/models", headers=headers, timeout=10)
                if response.status_code == 401:
                    assert response.json()["error"]["code"] == "revoked_api_key"
                    refused_after[i] = time.monotonic() - started
        time.sleep(0.05)
    assert sorted(refused_after) == [0, 2]
    assert max(refused_after.values()) <= CACHE_TTL + 0.3, refused_after


def test_redis_outage_refuses_limited_keys_and_recovers(cluster: Cluster) -> None:
    key, _ = new_key(cluster.replicas[0], rpm=6)
    assert spread(cluster, key, 3) == [200] * 3
    cluster.redis.stop()
    try:
        for replica in cluster.replicas:
            refused = chat(replica, key)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "limits_unavailable"
            assert refused.headers["retry-after"] == "5"
            assert chat(replica, ADMIN_KEY).status_code == 200  # a key without limits never needs Redis
    finally:
        cluster.redis.start()  # same port, empty: the minute's earlier count is gone with it
    statuses = spread(cluster, key, 18)
    assert statuses.count(200) == 6 and statuses.count(429) == 12, statuses
    for replica in cluster.replicas:
        assert replica.process.poll() is None
        log = replica.log()  # one warning per outage, not one per request
        assert log.count("Redis is unreachable") == 1 and log.count("Redis is reachable again") == 1, log
