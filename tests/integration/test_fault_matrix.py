"""The fault matrix: five kinds of failure, 20 trials each (SOMNER_FAULT_TRIALS), randomized with a fixed seed
(SOMNER_FAULT_SEED), one server per kind. For every trial the promises users are given are checked:

- a stream ends with its dialect's clean end or its dialect's error event, never a silent cut;
- the gateway keeps serving, and a lost engine is replaced;
- requests waiting behind the fault are served, or refused with a clear 503 in their dialect's shape;
- exactly one usage row per admitted request (written once the database is back; none counted twice).

The outcome table (kind x outcome counts) is printed at the end of the session and, with SOMNER_FAULT_REPORT set,
written there as JSON.

Kinds: the engine killed (SIGKILL) mid-stream; the engine hung (SIGSTOP) mid-stream, found by the heartbeat
(`engine.hang_timeout`); the client hanging up at a random point of a stream; the database unavailable (SQLite
locked by another process, PostgreSQL stopped) while requests run; Redis stopped while two replicas serve
requests. The engine kinds run the real engine on the default model; the store kinds run in front of the mock
upstream (benchmarks/mock_upstream.py), so that their trials are about the store, and quick.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from somner.models.backends.worker import WorkerBackend
from somner.settings import Settings
from somner.store.db import sqlite_url
from tests.conftest import link_model
from tests.inprocess import ThreadedGateway
from tests.integration.faults import (
    DIALECTS,
    Matrix,
    Reader,
    ask,
    ending,
    error_code,
    hang_up,
    settle_rows,
    usage_rows,
)
from tests.integration.test_replicas import MockUpstream
from tests.pg import PostgresCluster
from tests.redis_server import RedisServer
from tests.servers import ADMIN_KEY

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
TRIALS = int(os.environ.get("SOMNER_FAULT_TRIALS", "20"))
SEED = int(os.environ.get("SOMNER_FAULT_SEED", "19"))
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
HANG = 1.0  # engine.hang_timeout for the SIGSTOP kind


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> Iterator[Matrix]:
    found = Matrix()
    yield found
    if not found.outcomes:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\nfault matrix (seed {SEED}, {TRIALS} trials per kind):\n{found.table()}")
    if target := os.environ.get("SOMNER_FAULT_REPORT"):
        found.save(Path(target))


def settings_for(data_dir: Path, **extra: Any) -> Settings:
    auth = {"admin_key": ADMIN_KEY, **extra.pop("auth", {})}
    database = {"batch_interval": 0.1, **extra.pop("database", {})}
    return Settings(data_dir=data_dir, auth=auth, database=database, **extra)  # type: ignore[arg-type]


def engine_settings(tmp_path: Path, model_path: Path, **engine: Any) -> Settings:
    link_model(model_path, tmp_path / "data" / "models")
    options = {"ctx": 1024, "parallel": 1, "threads": 2, **engine}
    return settings_for(tmp_path / "data", engine=options, stream_keepalive=0.5, preload=[MODEL])


def engine_pid(gateway: ThreadedGateway, not_this: int | None = None, timeout: float = 60) -> int:
    """The pid of the model's live engine (another than `not_this`), once it is loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backend = gateway.services.manager.backend_of(MODEL)
        if isinstance(backend, WorkerBackend) and backend.pid not in (None, not_this) and backend.alive:
            assert backend.pid is not None
            return backend.pid
        time.sleep(0.02)
    raise AssertionError("no engine loaded")


def db_url(gateway: ThreadedGateway) -> str:
    return gateway.services.db.url


def wait_idle(gateway: ThreadedGateway, timeout: float = 30) -> None:
    """Every admission ticket and model lease given back."""
    deadline = time.monotonic() + timeout
    while True:
        busy = gateway.services.gateway.in_flight or any(s.in_flight for s in gateway.services.manager.statuses())
        if not busy:
            return
        assert time.monotonic() < deadline, "requests still in flight after the fault"
        time.sleep(0.02)


def check_refusal(reader: Reader) -> None:
    """A request that did not stream was refused clearly: a 503 in its dialect's shape (never a 500)."""
    assert reader.status == 503, (reader.status, reader.text)
    assert error_code(reader.text) != "?", reader.text


def classify(reader: Reader, admitted: set[str], maybe: set[str]) -> str:
    (admitted if reader.status == 200 else maybe).add(reader.request_id)
    if reader.status == 200:
        assert reader.ending != "cut", (reader.dialect, reader.failure, reader.lines[-3:])
    else:
        check_refusal(reader)
    return reader.outcome()


# -- 1 and 2: the engine killed, the engine hung ----------------------------------------------------------------


def engine_trials(kind: str, gateway: ThreadedGateway, matrix: Matrix, rng: random.Random, sig: int) -> None:
    admitted: set[str] = set()
    maybe: set[str] = set()
    pid = engine_pid(gateway)
    started = time.monotonic()
    for _ in range(TRIALS):
        dialect = rng.choice(DIALECTS)
        victim = Reader(gateway.url, dialect, *ask(dialect, MODEL, 400), ADMIN)
        victim.start()
        assert victim.wait_tokens(rng.randint(1, 4)), (victim.status, victim.text, victim.lines[-3:])
        waiting = rng.choice(DIALECTS)  # one slot: this one waits behind the victim when the fault comes
        queued = Reader(gateway.url, waiting, *ask(waiting, MODEL, 3), ADMIN)
        queued.start()
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(pid, sig)
        try:
            victim.finish()
            queued.finish()
        finally:
            with contextlib.suppress(ProcessLookupError):  # (a hung engine is killed by the manager)
                os.kill(pid, signal.SIGCONT)
        victim_end = classify(victim, admitted, maybe)
        queued_end = classify(queued, admitted, maybe)
        if sig == signal.SIGSTOP:  # the watchdog ended it, with an error event, not a clean end
            assert victim_end == "error", victim.lines[-3:]
        assert httpx.get(f"{gateway.url}/health", timeout=30).status_code == 200  # the gateway keeps serving
        fresh = engine_pid(gateway, not_this=pid)  # (the queued request brought it up, or the next one will)
        assert fresh != pid
        pid = fresh
        wait_idle(gateway)
        matrix.add(kind, f"stream {victim_end}", f"queued {queued_end}", "engine replaced")
    matrix.trials[kind] += TRIALS
    statuses = {s.id: s for s in gateway.services.manager.statuses()}
    assert statuses[MODEL].loads == TRIALS + 1  # one fresh engine per fault: no restart storm
    probe = Reader(gateway.url, "openai", *ask("openai", MODEL, 2), ADMIN)
    probe.run()
    assert probe.outcome() == "clean"
    admitted.add(probe.request_id)
    settle_rows(db_url(gateway), admitted, maybe)
    matrix.add(kind, *(["one usage row"] * len(admitted)))
    matrix.seconds[kind] = time.monotonic() - started


@pytest.mark.timeout(600)  # (20 engine restarts: about a minute alone, minutes on a busy machine)
def test_engine_killed_mid_stream(tmp_path: Path, model_path: Path, matrix: Matrix) -> None:
    with ThreadedGateway(engine_settings(tmp_path, model_path)) as gateway:
        engine_trials("engine SIGKILL", gateway, matrix, random.Random(SEED), signal.SIGKILL)


@pytest.mark.timeout(600)  # (20 engine restarts: about a minute alone, minutes on a busy machine)
def test_engine_hung_mid_stream(tmp_path: Path, model_path: Path, matrix: Matrix) -> None:
    with ThreadedGateway(engine_settings(tmp_path, model_path, hang_timeout=HANG)) as gateway:
        engine_trials("engine SIGSTOP", gateway, matrix, random.Random(SEED + 1), signal.SIGSTOP)


# -- 3: the client hangs up -------------------------------------------------------------------------------------


def test_client_disconnects_at_random_points(tmp_path: Path, model_path: Path, matrix: Matrix) -> None:
    rng = random.Random(SEED + 2)
    kind = "client disconnect"
    with ThreadedGateway(engine_settings(tmp_path, model_path, parallel=2)) as gateway:
        pid = engine_pid(gateway)
        started = time.monotonic()
        sent: set[str] = set()
        for _ in range(TRIALS):
            dialect = rng.choice(DIALECTS)
            after = rng.choice([0, 1, 64, 300, 700])  # bytes of the answer read before hanging up
            sent.add(hang_up(gateway.url, *ask(dialect, MODEL, 200), ADMIN, after))
            wait_idle(gateway)  # the engine's job was cancelled, the slot and the lease given back
            assert engine_pid(gateway) == pid  # a client leaving is no reason to restart anything
            matrix.add(kind, f"hung up after {after} bytes", "slot released")
        after_all = Reader(gateway.url, "ollama", *ask("ollama", MODEL, 3), ADMIN)
        after_all.run()
        assert after_all.outcome() == "clean"
        counts = settle_rows(db_url(gateway), {after_all.request_id}, sent)
        rows = [r for r in usage_rows(db_url(gateway)) if r.request_id in sent]
        assert all(r.disconnected and r.status == 499 for r in rows), rows
        matrix.add(kind, *(["one usage row (499, disconnected)"] * sum(counts[rid] for rid in sent)))
        matrix.trials[kind] += TRIALS
        matrix.seconds[kind] = time.monotonic() - started


# -- 4: the database unavailable --------------------------------------------------------------------------------


def store_trial(
    gateway: ThreadedGateway, rng: random.Random, outage: contextlib.AbstractContextManager[None]
) -> tuple[list[Reader], list[str]]:
    """Requests in each dialect while the store is out (one of them started before the outage)."""
    dialect = rng.choice(DIALECTS)
    before = Reader(gateway.url, dialect, *ask(dialect, "remote", 20), ADMIN)
    before.start()
    assert before.wait_tokens(1, timeout=10)
    readers = [before]
    with outage:
        during = [Reader(gateway.url, d, *ask(d, "remote", rng.randint(1, 20)), ADMIN) for d in DIALECTS]
        for reader in during:
            reader.start()
        for reader in during:
            reader.finish(30)
        readers += during
        time.sleep(rng.uniform(0.1, 0.4))  # (the usage writer tries, and fails, meanwhile)
    before.finish(30)
    return readers, [r.outcome() for r in readers]


@contextlib.contextmanager
def sqlite_locked(path: Path) -> Iterator[None]:
    """Another process's exclusive lock on the database: every write waits, every read too."""
    holder = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        holder.execute("COMMIT")
        holder.close()


@contextlib.contextmanager
def postgres_stopped(cluster: PostgresCluster) -> Iterator[None]:
    cluster.stop()
    try:
        yield
    finally:
        cluster.start()


def test_database_unavailable_during_requests(tmp_path: Path, matrix: Matrix) -> None:
    rng = random.Random(SEED + 3)
    kind = "database unavailable"
    upstream = MockUpstream("--delay-ms", "10")
    cluster: PostgresCluster | None = None
    started = time.monotonic()
    try:
        models = [{"id": "remote", "urls": [upstream.url]}]
        half = TRIALS // 2
        with ThreadedGateway(settings_for(tmp_path / "sqlite", models=models)) as gateway:
            admitted: set[str] = set()
            maybe: set[str] = set()
            path = tmp_path / "sqlite" / "somner.db"
            assert db_url(gateway) == sqlite_url(path)
            for _ in range(half):
                readers, outcomes = store_trial(gateway, rng, sqlite_locked(path))
                for reader in readers:
                    classify(reader, admitted, maybe)
                matrix.add(kind, *(f"sqlite locked: {o}" for o in outcomes))
            settle_rows(db_url(gateway), admitted, maybe)
            matrix.add(kind, *(["one usage row"] * len(admitted)))
            assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 200
        cluster = PostgresCluster()
        cluster.start()
        database = {"url": cluster.create_database()}
        with ThreadedGateway(settings_for(tmp_path / "pg", models=models, database=database)) as gateway:
            admitted, maybe = set(), set()
            spooled = gateway.services.recorder.spooled
            for _ in range(TRIALS - half):
                readers, outcomes = store_trial(gateway, rng, postgres_stopped(cluster))
                for reader in readers:
                    classify(reader, admitted, maybe)
                matrix.add(kind, *(f"postgres stopped: {o}" for o in outcomes))
            settle_rows(db_url(gateway), admitted, maybe)
            matrix.add(kind, *(["one usage row"] * len(admitted)))
            assert gateway.services.recorder.spooled > spooled  # rows waited in the spool for the database
            matrix.add(kind, *(["rows spooled, then written once"] * (gateway.services.recorder.spooled - spooled)))
            assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 200
        matrix.trials[kind] += TRIALS
        matrix.seconds[kind] = time.monotonic() - started
    finally:
        upstream.stop()
        if cluster is not None:
            cluster.remove()


# -- 5: Redis stopped, with replicas ------------------------------------------------------------------------------


def test_redis_stopped_during_requests_with_replicas(tmp_path: Path, postgres: PostgresCluster, matrix: Matrix) -> None:
    rng = random.Random(SEED + 4)
    kind = "redis stopped (2 replicas)"
    redis = RedisServer()
    redis.start()
    upstream = MockUpstream("--delay-ms", "10")
    started = time.monotonic()
    try:
        shared = {
            "models": [{"id": "remote", "urls": [upstream.url]}],
            "database": {"url": postgres.create_database()},
            "redis": {"url": redis.url, "on_error": "closed", "timeout": 0.5, "connect_timeout": 0.5},
        }
        with (
            ThreadedGateway(settings_for(tmp_path / "r0", **shared)) as first,
            ThreadedGateway(settings_for(tmp_path / "r1", **shared)) as second,
        ):
            replicas = [first, second]
            made = httpx.post(
                f"{first.url}/admin/keys", json={"user": "limited", "rpm": 100000, "max_concurrent": 8}, headers=ADMIN
            )
            assert made.status_code == 201, made.text
            limited = {"authorization": f"Bearer {made.json()['key']}"}
            admitted: set[str] = set()
            maybe: set[str] = set()
            for trial in range(TRIALS):
                replica = replicas[trial % 2]
                dialect = rng.choice(DIALECTS)
                running = Reader(replica.url, dialect, *ask(dialect, "remote", 30), limited)
                running.start()
                assert running.wait_tokens(1, timeout=10), (running.status, running.text)
                redis.stop()
                try:
                    time.sleep(rng.uniform(0.0, 0.2))
                    during = [
                        Reader(r.url, d, *ask(d, "remote", 3), headers)
                        for r in replicas
                        for d, headers in ((rng.choice(DIALECTS), limited), (rng.choice(DIALECTS), ADMIN))
                    ]
                    for reader in during:
                        reader.start()
                    for reader in during:
                        reader.finish(30)
                finally:
                    redis.start()
                running.finish(30)
                outcomes = [f"stream started before: {classify(running, admitted, maybe)}"]
                for reader in during:
                    outcome = classify(reader, admitted, maybe)
                    if reader.headers is ADMIN:
                        assert outcome == "clean"  # a key without limits never needs Redis
                        outcomes.append("unlimited key: served")
                    elif reader.status == 200:
                        outcomes.append(f"limited key: {outcome} (Redis answered first)")
                    else:  # on_error: closed
                        assert "Rate limits cannot be checked right now" in reader.text, reader.text
                        outcomes.append("limited key: 503 limits_unavailable")
                after = Reader(replica.url, "openai", *ask("openai", "remote", 2), limited)
                after.run()
                assert after.outcome() == "clean", after.text  # Redis is back: the limited key works again
                admitted.add(after.request_id)
                matrix.add(kind, *outcomes)
            settle_rows(db_url(first), admitted, maybe)
            matrix.add(kind, *(["one usage row"] * len(admitted)))
            for replica in replicas:
                assert httpx.get(f"{replica.url}/health", timeout=10).status_code == 200
        matrix.trials[kind] += TRIALS
        matrix.seconds[kind] = time.monotonic() - started
    finally:
        upstream.stop()
        redis.remove()


def test_the_matrix_helpers_tell_a_silent_cut_from_an_ending() -> None:
    assert ending("openai", ["data: {}", "data: [DONE]"]) == "clean"
    assert ending("openai", ["data: {}", 'data: {"error":{"message":"x"}}']) == "error"
    assert ending("openai", ["data: {}"]) == "cut"
    assert ending("ollama", ['{"done":false}', '{"done":true}']) == "clean"
    assert ending("ollama", ['{"done":false}', '{"error":"gone"}']) == "error"
    assert ending("ollama", ['{"done":false}']) == "cut"
    assert ending("anthropic", ["event: message_start", "data: {}", "event: message_stop", "data: {}"]) == "clean"
    assert ending("anthropic", ["event: message_start", "data: {}", "event: error", "data: {}"]) == "error"
    assert ending("anthropic", ["event: message_start", "data: {}", "event: content_block_delta"]) == "cut"
