"""The model manager with real engines: load on demand, idle unload and keep_alive, swaps under load,
process and upstream backends."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from somner.models.backends.process import ProcessBackend
from somner.models.backends.worker import WorkerBackend
from somner.settings import ModelEntry, Settings
from tests.conftest import link_model
from tests.inprocess import NO_AUTH, ThreadedGateway
from tests.servers import ADMIN_KEY, ServeProcess

pytestmark = pytest.mark.integration

ENGINE = {"ctx": 512, "parallel": 2, "threads": 2}
NO_EOS = {"1": -100, "106": -100, "212": -100}


def two_models(tmp_path: Path, model_path: Path, **settings: Any) -> Settings:
    models = tmp_path / "data" / "models"
    link_model(model_path, models, "alpha.gguf")
    link_model(model_path, models, "beta.gguf")
    return Settings(data_dir=tmp_path / "data", engine=ENGINE, auth=NO_AUTH, **settings)  # type: ignore[arg-type]


def ask(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **extra}
    return client.post("/v1/chat/completions", json=body)


def status(gateway: ThreadedGateway, model: str) -> Any:
    return {s.id: s for s in gateway.services.manager.statuses()}[model]


def pid_of(gateway: ThreadedGateway, model: str) -> int:
    backend = gateway.services.manager.backend_of(model)
    assert isinstance(backend, WorkerBackend | ProcessBackend)
    assert backend.pid is not None
    return backend.pid


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_load_on_demand_once_for_concurrent_first_requests(tmp_path: Path, model_path: Path) -> None:
    with (
        ThreadedGateway(two_models(tmp_path, model_path)) as gateway,
        httpx.Client(base_url=gateway.url, timeout=120) as client,
    ):
        states = {m["id"]: m["status"] for m in client.get("/v1/models").json()["data"]}
        assert states == {"alpha": "unloaded", "beta": "unloaded"}
        seen: list[str] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                state = {m["id"]: m["status"] for m in httpx.get(f"{gateway.url}/v1/models").json()["data"]}["alpha"]
                if not seen or seen[-1] != state:
                    seen.append(state)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:  # (the watcher has seen the state before the first request)
            time.sleep(0.01)
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(ask(client, "alpha").status_code)) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.1)
        stop.set()
        watcher.join()
        assert results == [200] * 10
        assert seen[:3] == ["unloaded", "loading", "loaded"]
        assert status(gateway, "alpha").loads == 1
        assert ask(client, "beta").status_code == 200
        assert status(gateway, "beta").loads == 1
        assert {m["id"]: m["status"] for m in client.get("/v1/models").json()["data"]} == {
            "alpha": "loaded",
            "beta": "loaded",
        }


def test_idle_unload_keep_alive_and_long_streams(tmp_path: Path, model_path: Path) -> None:
    with (
        ThreadedGateway(two_models(tmp_path, model_path, ttl=2)) as gateway,
        httpx.Client(base_url=gateway.url, timeout=120) as client,
    ):
        assert ask(client, "alpha").status_code == 200
        first = pid_of(gateway, "alpha")
        wait_for(lambda: status(gateway, "alpha").state.value == "unloaded", 6, "the ttl to unload alpha")
        wait_for(lambda: gone(first), 10, "the engine process to exit")  # its memory is returned with it

        # A stream longer than the ttl keeps the model loaded until it ends, and the ttl counts from then.
        body = {
            "model": "alpha",
            "messages": [{"role": "user", "content": "Go on"}],
            "max_tokens": 240,
            "logit_bias": NO_EOS,
            "stream": True,
        }
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            started = time.monotonic()
            for _ in response.iter_lines():
                pass
        assert time.monotonic() - started > 2.5, "the stream should outlast the ttl"
        assert status(gateway, "alpha").state.value == "loaded"
        wait_for(lambda: status(gateway, "alpha").state.value == "unloaded", 6, "the ttl after the stream")

        assert ask(client, "beta", keep_alive=0).status_code == 200
        beta = pid_of(gateway, "beta") if gateway.services.manager.backend_of("beta") else None
        wait_for(lambda: status(gateway, "beta").state.value == "unloaded", 2, "keep_alive 0 to unload beta")
        if beta is not None:
            wait_for(lambda: gone(beta), 10, "beta's engine to exit")

        assert ask(client, "alpha", keep_alive=-1).status_code == 200
        time.sleep(3.5)
        assert status(gateway, "alpha").state.value == "loaded"  # survives the ttl


def test_swaps_under_load_fail_nothing(tmp_path: Path, model_path: Path) -> None:
    settings = two_models(tmp_path, model_path, max_loaded=1)
    failures: Counter[str] = Counter()
    done: Counter[str] = Counter()
    pids: set[int] = set()
    with ThreadedGateway(settings) as gateway:
        deadline = time.monotonic() + 60

        def client_loop(index: int) -> None:
            with httpx.Client(base_url=gateway.url, timeout=180) as client:
                turn = index
                while time.monotonic() < deadline:
                    model = "alpha" if turn % 2 else "beta"
                    response = ask(client, model)
                    if response.status_code == 200:
                        done[model] += 1
                    else:
                        failures[f"{response.status_code} {response.text[:120]}"] += 1
                    turn += 1
                    backend = gateway.services.manager.backend_of(model)
                    if isinstance(backend, WorkerBackend) and backend.pid:
                        pids.add(backend.pid)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == Counter()
        assert done["alpha"] > 0 and done["beta"] > 0
        swaps = status(gateway, "alpha").loads + status(gateway, "beta").loads
        assert swaps >= 3, f"expected the models to swap repeatedly, saw {swaps} loads"
        loaded = [m for m in ("alpha", "beta") if status(gateway, m).state.value == "loaded"]
        assert len(loaded) <= 1
        alive = [pid for pid in pids if not gone(pid)]
        assert len(alive) <= 1, f"orphan engines: {alive}"
    for pid in pids:
        wait_for(lambda pid=pid: gone(pid), 15, f"engine {pid} to exit after shutdown")


def test_process_backend_starts_on_demand_and_stops_on_ttl(tmp_path: Path, model_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "somner",
        "worker",
        "--model",
        "{model_path}",
        "--port",
        "{port}",
        "--id",
        "{model_id}",
        "--ctx",
        "512",
        "--parallel",
        "2",
        "--threads",
        "2",
    ]
    settings = Settings(
        data_dir=tmp_path / "data",
        auth=NO_AUTH,  # type: ignore[arg-type]
        ttl=2,
        models=[
            ModelEntry.model_validate({"id": "proc", "path": model_path, "command": command}),
            ModelEntry.model_validate({"id": "broken", "command": [sys.executable, "-c", "import sys; sys.exit(3)"]}),
        ],
    )
    with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as client:
        assert status(gateway, "proc").state.value == "unloaded"
        reply = ask(client, "proc")
        assert reply.status_code == 200
        assert reply.json()["model"] == "proc"
        streamed = client.post(
            "/v1/chat/completions",
            json={"model": "proc", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True},
        )
        assert streamed.text.rstrip().endswith("data: [DONE]")
        pid = pid_of(gateway, "proc")
        wait_for(lambda: status(gateway, "proc").state.value == "unloaded", 6, "the ttl to stop the process")
        wait_for(lambda: gone(pid), 10, "the engine process to exit")

        failed = ask(client, "broken")
        assert failed.status_code == 503
        error = failed.json()["error"]
        assert error["code"] == "model_load_failed"
        assert "exited with status 3" in error["message"]
        again = ask(client, "broken")
        assert again.status_code == 503
        assert int(again.headers["retry-after"]) >= 1
        assert status(gateway, "broken").loads == 1  # no retry storm


def test_upstream_backend_serves_through_another_somner(tmp_path: Path, serve: ServeProcess) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        auth=NO_AUTH,  # type: ignore[arg-type]
        models=[
            ModelEntry(
                id="remote", urls=[serve.url], upstream_model="gemma-3-270m-q4_k_m", api_key=SecretStr(ADMIN_KEY)
            )
        ],
    )
    with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as client:
        reply = ask(client, "remote", max_tokens=4, temperature=0)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "remote"
        assert reply.json()["usage"]["completion_tokens"] == 4
        direct = httpx.post(
            f"{serve.url}/v1/chat/completions",
            json={
                "model": "gemma-3-270m-q4_k_m",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
                "temperature": 0,
            },
            headers=serve.headers,
            timeout=60,
        ).json()
        assert reply.json()["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
        body = {"model": "remote", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
        text = client.post("/v1/chat/completions", json=body).text
        assert '"model":"remote"' in text and '"model":"gemma' not in text
        assert text.rstrip().endswith("data: [DONE]")
        missing = ask(client, "nothing")
        assert missing.status_code == 404
