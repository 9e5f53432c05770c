"""`somner serve --workers 2`: a supervisor and two gateway processes on one port, in front of a real HTTP fake
engine (an `upstream` model), with Redis for the shared limits.

Which process answered a request is read from the processes' own log files (`server-1`, `server-2`: one line per
request, with the request id the client sent), and the processes themselves from /proc.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from somner.gateway_processes.supervisor import local_engine_models
from somner.models.registry import ModelRegistry
from somner.observability.logfiles import files_of
from somner.settings import load_settings
from tests.fakes.engine_server import EngineServer
from tests.redis_server import RedisServer
from tests.servers import ADMIN_KEY, ServeProcess, free_port, start_serve

pytestmark = pytest.mark.integration

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
SLOW_CHUNKS, SLOW_DELAY_MS = 8, 100.0  # a slow stream lasts about 0.8 s
_SERVING = re.compile(r"gateway process (\d+) \(pid (\d+)\) is serving")


@dataclass
class Engines:
    fast: EngineServer
    slow: EngineServer


@pytest.fixture(scope="module")
def engines() -> Iterator[Engines]:
    fast, slow = EngineServer(), EngineServer(delay_ms=SLOW_DELAY_MS, chunks=SLOW_CHUNKS)
    try:
        fast.start()
        slow.start()
        yield Engines(fast, slow)
    finally:
        fast.close()
        slow.close()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def write_config(directory: Path, engines: Engines) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    config = {
        "models": [{"id": "remote", "urls": [engines.fast.url]}, {"id": "slow", "urls": [engines.slow.url]}],
        "database": {"batch_interval": 0.1},
    }
    path.write_bytes(orjson.dumps(config))
    return path


def children_of(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def is_gone_or_zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split() or ["X"])[0] in ("Z", "X")
    except OSError:
        return True


def serving_pids(server: ServeProcess) -> dict[int, int]:
    """Gateway process number -> pid of its newest process that reported serving (from the supervisor's log)."""
    return {int(number): int(pid) for number, pid in _SERVING.findall(server.log())}


def wait_for(condition: str, check: Callable[[], bool], server: ServeProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if server.process.poll() is not None:
            raise AssertionError(f"the supervisor exited ({server.process.returncode}):\n{server.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {condition}:\n{server.log()}")
        time.sleep(0.05)


def start_workers(base: Path, engines: Engines, redis: RedisServer, *args: str) -> ServeProcess:
    config = write_config(base, engines)
    env = {"SOMNER_REDIS__URL": redis.url}
    server = start_serve(base / "data", "--config", str(config), "--workers", "2", *args, env=env, wait=False)
    wait_for("both gateway processes serve", lambda: len(serving_pids(server)) == 2, server, timeout=60)
    return server


def chat(server: ServeProcess, key: str, request_id: str = "", model: str = "remote") -> httpx.Response:
    """One chat on a connection of its own (the kernel picks the process per connection)."""
    headers = {"authorization": f"Bearer {key}"}
    if request_id:
        headers["x-request-id"] = request_id
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def new_key(server: ServeProcess, **rights: object) -> str:
    response = httpx.post(f"{server.url}/admin/keys", json={"user": "workers", **rights}, headers=ADMIN, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def request_ids_by_process(data_dir: Path) -> dict[int, set[str]]:
    """The request ids each gateway process logged an answer for, by process number."""
    found: dict[int, set[str]] = {}
    for number in (1, 2):
        text = "".join(p.read_text(errors="replace") for p in files_of(data_dir / "logs", f"server-{number}"))
        found[number] = set(re.findall(r"POST /v1/chat/completions \S+ \d+ .* id=(\S+)", text))
    return found


@dataclass
class Workers:
    server: ServeProcess
    health_port: int


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, engines: Engines, redis: RedisServer) -> Iterator[Workers]:
    health_port = free_port()
    server = start_workers(tmp_path_factory.mktemp("workers"), engines, redis, "--health-port", str(health_port))
    try:
        yield Workers(server, health_port)
    finally:
        server.stop()


@pytest.fixture
def workers(cluster: Workers) -> ServeProcess:
    return cluster.server


def test_both_gateway_processes_answer_requests(workers: ServeProcess) -> None:
    pids = serving_pids(workers)
    assert set(pids.values()) == children_of(workers.process.pid)  # two children of the supervisor, both serving
    ids = [f"spread-{i}" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda rid: chat(workers, ADMIN_KEY, rid).status_code, ids))
    assert statuses == [200] * len(ids)

    def all_logged() -> bool:
        seen = request_ids_by_process(workers.data_dir)
        return seen[1] | seen[2] >= set(ids)

    wait_for("every request is logged", all_logged, workers, timeout=5)
    seen = request_ids_by_process(workers.data_dir)
    mine = {number: ids_ & set(ids) for number, ids_ in seen.items()}
    assert mine[1] and mine[2], {n: len(s) for n, s in mine.items()}  # both processes answered some
    assert not mine[1] & mine[2]  # and each request was answered once
    for number, pid in pids.items():  # each log file is the process's own
        text = "".join(p.read_text() for p in files_of(workers.data_dir / "logs", f"server-{number}"))
        assert f"gateway process {number} (pid {pid}) starting" in text


def test_one_rate_limit_across_gateway_processes(workers: ServeProcess, engines: Engines) -> None:
    key = new_key(workers, rpm=10)
    before = engines.fast.chat_requests()
    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(lambda _: chat(workers, key).status_code, range(30)))
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 20, statuses
    assert engines.fast.chat_requests() - before == 10  # refused requests never reached the engine


def test_a_killed_gateway_process_is_replaced_and_the_port_keeps_serving(workers: ServeProcess) -> None:
    victim = serving_pids(workers)[1]
    os.kill(victim, signal.SIGKILL)
    wait_for("the killed process is gone", lambda: is_gone_or_zombie(victim), workers, timeout=10)
    # Its socket left the port's group with it: the other process takes every new connection meanwhile.
    assert [chat(workers, ADMIN_KEY).status_code for _ in range(10)] == [200] * 10
    wait_for("a new gateway process 1 serves", lambda: serving_pids(workers).get(1, victim) != victim, workers)
    assert f"gateway process 1 (pid {victim}) was killed by SIGKILL; starting it again" in workers.log()
    replacement = serving_pids(workers)[1]
    assert children_of(workers.process.pid) == {replacement, serving_pids(workers)[2]}
    assert [chat(workers, ADMIN_KEY).status_code for _ in range(10)] == [200] * 10


def test_the_health_port_is_shared_by_the_gateway_processes(cluster: Workers) -> None:
    health = f"http://127.0.0.1:{cluster.health_port}"
    for _ in range(10):  # connections of their own, spread over both processes' sockets
        assert httpx.get(f"{health}/ready", timeout=5).json() == {"ready": True}
    assert httpx.get(f"{health}/v1/models", headers=ADMIN, timeout=5).status_code == 404  # health routes only
    listening = [line for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if line.split()[3] == "0A"]
    ports = [int(line.split()[1].rsplit(":", 1)[1], 16) for line in listening]
    assert ports.count(cluster.health_port) == 2  # one listening socket per gateway process
    assert ports.count(cluster.server.port) == 2


def test_models_with_local_engines_are_found_for_the_memory_warning(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {
            "models": [
                {"id": "remote", "urls": ["http://127.0.0.1:9"]},
                {"id": "command", "command": "engine --port {port}"},
                {"id": "file", "path": str(tmp_path / "a.gguf")},
                {"id": "mixed", "backends": [{"url": "http://127.0.0.1:9"}, {"path": str(tmp_path / "b.gguf")}]},
                {"id": "remote-pool", "backends": [{"url": "http://127.0.0.1:9"}, {"url": "http://127.0.0.1:10"}]},
            ]
        },
        environ={},
    )
    specs = ModelRegistry(settings, tmp_path / "models").specs()
    assert sorted(local_engine_models(specs)) == ["command", "file", "mixed"]


class SlowStream(threading.Thread):
    """A streamed chat on the slow engine, read in the background: in flight when the supervisor is stopped."""

    def __init__(self, server: ServeProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.started = threading.Event()
        self.events: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        try:
            with httpx.stream(
                "POST", f"{self.server.url}/v1/chat/completions", json=body, headers=ADMIN, timeout=30
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line.removeprefix("data: "))
                        self.started.set()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.started.set()


def test_sigterm_drains_every_gateway_process_and_leaves_nothing(
    tmp_path: Path, engines: Engines, redis: RedisServer
) -> None:
    server = start_workers(tmp_path, engines, redis)
    try:
        supervisor = server.process.pid
        children = children_of(supervisor)
        assert len(children) == 2
        stream = SlowStream(server)
        stream.start()
        assert stream.started.wait(10)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log()
        stream.join(10)
        assert stream.error is None
        assert stream.events[-1] == "[DONE]"  # the stream in flight finished during the drain
        deltas = [orjson.loads(e)["choices"][0]["delta"] for e in stream.events[:-1] if orjson.loads(e)["choices"]]
        assert sum(1 for delta in deltas if delta.get("content")) == SLOW_CHUNKS
        for pid in children:
            assert not Path(f"/proc/{pid}").exists(), f"gateway process {pid} was left behind (or not reaped)"
        log = server.log()
        assert "gateway process 1" in log and "all gateway processes stopped" in log
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/ping", timeout=2)
    finally:
        server.stop()


def somner(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOMNER_")}
    return subprocess.run(
        [sys.executable, "-m", "somner", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


def test_workers_without_redis_are_refused_naming_redis_url(tmp_path: Path) -> None:
    result = somner("serve", "--data-dir", str(tmp_path), "--port", str(free_port()), "--workers", "2")
    assert result.returncode == 1
    assert "redis.url" in result.stderr
    assert not (tmp_path / "somner.db").exists()  # refused before doing anything


def test_zero_workers_is_a_configuration_error(tmp_path: Path) -> None:
    result = somner("serve", "--data-dir", str(tmp_path), "--port", str(free_port()), "--workers", "0")
    assert result.returncode == 1
    assert "invalid configuration" in result.stderr
    assert "workers" in result.stderr


def test_a_taken_port_is_refused_before_any_gateway_process_starts(tmp_path: Path) -> None:
    config = {"auth": {"enabled": False}, "models": [{"id": "remote", "urls": ["http://127.0.0.1:9"]}]}
    (tmp_path / "config.yaml").write_bytes(orjson.dumps(config))  # (without auth, no Redis is needed)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ("--config", str(tmp_path / "config.yaml"), "--data-dir", str(tmp_path / "data"), "--port", str(port))
        result = somner("serve", *args, "--workers", "2")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "gateway process" not in result.stderr


def test_start_status_and_stop_run_the_supervisor_in_the_background(
    tmp_path: Path, engines: Engines, redis: RedisServer
) -> None:
    config = write_config(tmp_path, engines)
    data = tmp_path / "data"
    env = {"SOMNER_REDIS__URL": redis.url, "SOMNER_ADMIN_KEY": ADMIN_KEY}
    common = ("--config", str(config), "--data-dir", str(data))
    started = somner("start", *common, "--port", str(free_port()), "--workers", "2", env=env)
    assert started.returncode == 0, started.stderr
    pid = int((data / "somner.pid").read_text())
    try:
        deadline = time.monotonic() + 30
        while len(children_of(pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        children = children_of(pid)
        assert len(children) == 2
        assert orjson.loads((data / "somner.json").read_bytes())["options"]["workers"] == 2
        status = somner("status", *common, env=env)
        assert status.returncode == 0, status.stdout
        assert f"pid {pid}" in status.stdout
        stopped = somner("stop", *common, env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert is_gone_or_zombie(pid)  # (not our child: whoever adopted it reaps it)
        for child in children:
            assert not Path(f"/proc/{child}").exists(), f"gateway process {child} was left behind (or not reaped)"
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
