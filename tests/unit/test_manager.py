"""The model manager's lifecycle with fake backends: single load, failures, backoff, crashes, shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from somner.errors import ModelLoadFailed, ModelNotFound, Unavailable
from somner.models.manager import ModelManager, ModelState, retry_delay
from somner.models.registry import ModelRegistry
from somner.settings import Settings
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_manager(tmp_path: Path, farm: FakeFarm, clock: Clock | None = None) -> ModelManager:
    for name in ("alpha", "beta"):
        (tmp_path / f"{name}.gguf").write_bytes(b"GGUF")
    registry = ModelRegistry(Settings(), tmp_path)
    return ModelManager(registry, farm.factory, clock or Clock())


async def test_concurrent_first_requests_load_once(tmp_path: Path) -> None:
    farm = FakeFarm(start_delay=0.05)
    manager = make_manager(tmp_path, farm)
    assert manager.state("alpha") is ModelState.UNLOADED
    leases = await asyncio.gather(*(manager.acquire("alpha") for _ in range(10)))
    assert farm.starts == 1
    assert {id(lease.backend) for lease in leases} == {id(farm.backends[0])}
    assert manager.state("alpha") is ModelState.LOADED
    status = {s.id: s for s in manager.statuses()}
    assert status["alpha"].in_flight == 10
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert {s.id: s for s in manager.statuses()}["alpha"].in_flight == 0


async def test_state_is_loading_during_load(tmp_path: Path) -> None:
    farm = FakeFarm(start_delay=0.2)
    manager = make_manager(tmp_path, farm)
    task = asyncio.create_task(manager.acquire("beta"))
    await asyncio.sleep(0.05)
    assert manager.state("beta") is ModelState.LOADING
    (await task).release()
    assert manager.state("beta") is ModelState.LOADED


async def test_unknown_model_is_not_found(tmp_path: Path) -> None:
    manager = make_manager(tmp_path, FakeFarm())
    with pytest.raises(ModelNotFound, match="alpha, beta"):
        await manager.acquire("gamma")
    with pytest.raises(ModelNotFound):
        await manager.acquire("../alpha")


async def test_failed_load_fails_waiters_once_then_backs_off(tmp_path: Path) -> None:
    farm = FakeFarm(start_delay=0.05)
    farm.fail_loads("corrupt file")
    clock = Clock()
    manager = make_manager(tmp_path, farm, clock)
    results = await asyncio.gather(*(manager.acquire("alpha") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ModelLoadFailed) for r in results)
    assert farm.starts == 1  # waiters got the same failure: no retry storm
    assert manager.state("alpha") is ModelState.FAILED
    with pytest.raises(ModelLoadFailed) as info:
        await manager.acquire("alpha")
    assert "Retry-After" in info.value.headers
    assert farm.starts == 1
    clock.now += retry_delay(1) + 0.1
    farm.start_error = None
    (await manager.acquire("alpha")).release()
    assert farm.starts == 2
    assert manager.state("alpha") is ModelState.LOADED


def test_backoff_grows_and_is_capped() -> None:
    delays = [retry_delay(n) for n in range(0, 10)]
    assert delays[0] == 0
    assert delays == sorted(delays)
    assert max(delays) == 60.0


async def test_crashed_backend_is_replaced_on_next_request(tmp_path: Path) -> None:
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm)
    (await manager.acquire("alpha")).release()
    farm.backends[0].crash(-9)
    for _ in range(50):
        if manager.state("alpha") is ModelState.FAILED:
            break
        await asyncio.sleep(0.01)
    assert manager.state("alpha") is ModelState.FAILED
    lease = await manager.acquire("alpha")
    assert lease.backend is farm.backends[1]
    assert farm.starts == 2
    lease.release()


async def test_unload_and_shutdown_stop_backends(tmp_path: Path) -> None:
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm)
    (await manager.acquire("alpha")).release()
    (await manager.acquire("beta")).release()
    await manager.unload("alpha")
    assert manager.state("alpha") is ModelState.UNLOADED
    assert farm.backends[0].stopped
    await manager.shutdown()
    assert farm.backends[1].stopped
    assert manager.state("beta") is ModelState.UNLOADED
    with pytest.raises(Unavailable):
        await manager.acquire("alpha")


async def test_illegal_transition_is_a_bug(tmp_path: Path) -> None:
    manager = make_manager(tmp_path, FakeFarm())
    record = manager._record("alpha")
    with pytest.raises(RuntimeError, match="illegal"):
        manager._transition(record, ModelState.LOADED)
