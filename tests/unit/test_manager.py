"""The model manager's lifecycle with fake backends and a fake clock: single loads, failures and backoff,
crashes, keep-alive and ttl, eviction under budgets and groups, draining swaps, names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from somner import services
from somner.errors import ModelLoadFailed, ModelNotFound, Unavailable
from somner.models.manager import FOREVER, ModelManager, ModelState, Policy, retry_delay
from somner.models.memory import machine_memory
from somner.models.placement import RAM, Device
from somner.models.registry import ModelRegistry
from somner.observability.gpu import GpuMemory
from somner.settings import ModelEntry, Settings
from tests.fakes.backends import FakeBackend, FakeFarm

pytestmark = pytest.mark.anyio
GIB = 1024**3


def stopped(backend: FakeBackend) -> bool:
    return backend.stopped  # a call, so that type narrowing does not outlive an await


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_manager(
    tmp_path: Path,
    farm: FakeFarm,
    clock: Clock | None = None,
    *,
    policy: Policy | None = None,
    sizes: dict[str, int] | None = None,
    entries: list[ModelEntry] | None = None,
    names: tuple[str, ...] = ("alpha", "beta"),
) -> ModelManager:
    for name in names:
        (tmp_path / f"{name}.gguf").write_bytes(b"GGUF")
    groups = {e.group: {"exclusive": True} for e in entries or [] if e.group}
    registry = ModelRegistry(Settings(models=entries or [], groups=groups), tmp_path)  # type: ignore[arg-type]
    return ModelManager(
        registry,
        farm.factory,
        policy=policy or Policy(min_residency=0),
        estimate=lambda spec: {RAM: (sizes or {}).get(spec.id, 0)},
        clock=clock or Clock(),
    )


async def test_concurrent_first_requests_load_once(tmp_path: Path) -> None:
    farm = FakeFarm(start_delay=0.05)
    manager = make_manager(tmp_path, farm)
    assert manager.state("alpha") is ModelState.UNLOADED
    leases = await asyncio.gather(*(manager.acquire("alpha") for _ in range(10)))
    assert farm.starts == 1
    assert {id(lease.backend) for lease in leases} == {id(farm.backends[0])}
    assert manager.state("alpha") is ModelState.LOADED
    assert {s.id: s for s in manager.statuses()}["alpha"].in_flight == 10
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
    assert all(isinstance(result, ModelLoadFailed) for result in results)
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
    delays = [retry_delay(n) for n in range(10)]
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
    lease.release()


async def test_ttl_keep_alive_and_forever(tmp_path: Path) -> None:
    clock = Clock()
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm, clock, policy=Policy(min_residency=0, ttl=300))
    (await manager.acquire("alpha")).release()  # the default ttl
    clock.now += 299
    assert await manager.reap() == []
    clock.now += 2
    assert await manager.reap() == ["alpha"]
    assert manager.state("alpha") is ModelState.UNLOADED
    assert stopped(farm.backends[0])
    (await manager.acquire("alpha")).release(keep_alive=0)  # unload as soon as the request ends
    assert await manager.reap() == ["alpha"]
    (await manager.acquire("alpha")).release(keep_alive=-1)  # never
    clock.now += 10 * 300
    assert await manager.reap() == []
    assert {s.id: s for s in manager.statuses()}["alpha"].expires_at == FOREVER
    (await manager.acquire("alpha")).release()  # a later request without keep_alive restores the ttl
    clock.now += 301
    assert await manager.reap() == ["alpha"]


async def test_no_expiry_while_a_request_is_in_flight(tmp_path: Path) -> None:
    clock = Clock()
    manager = make_manager(tmp_path, FakeFarm(), clock, policy=Policy(min_residency=0, ttl=2))
    first = await manager.acquire("alpha")
    (await manager.acquire("alpha")).release(keep_alive=0)
    clock.now += 100
    assert await manager.reap() == []  # a long stream keeps it loaded
    first.release()
    clock.now += 3
    assert await manager.reap() == ["alpha"]


async def test_per_model_ttl_and_pinned(tmp_path: Path) -> None:
    clock = Clock()
    entries = [
        ModelEntry(id="alpha", path=tmp_path / "alpha.gguf", ttl=10),
        ModelEntry(id="beta", path=tmp_path / "beta.gguf", pinned=True),
    ]
    manager = make_manager(
        tmp_path, FakeFarm(), clock, policy=Policy(min_residency=0, ttl=1000, max_loaded=1), entries=entries
    )
    (await manager.acquire("alpha")).release()
    clock.now += 11
    assert await manager.reap() == ["alpha"]
    (await manager.acquire("beta")).release(keep_alive=0)
    clock.now += 10**6
    assert await manager.reap() == []
    with pytest.raises(Unavailable):  # pinned beta fills max_loaded=1 and is never evicted
        manager.policy = Policy(min_residency=0, max_loaded=1, swap_timeout=0.1)
        await manager.acquire("alpha")


async def test_max_loaded_evicts_the_least_recently_used_idle_model(tmp_path: Path) -> None:
    clock = Clock()
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm, clock, policy=Policy(min_residency=0, max_loaded=2), names=("a", "b", "c"))
    for name in ("a", "b"):
        clock.now += 1
        (await manager.acquire(name)).release()
    clock.now += 1
    (await manager.acquire("c")).release()
    assert [manager.state(n) for n in ("a", "b", "c")] == [ModelState.UNLOADED, ModelState.LOADED, ModelState.LOADED]


async def test_memory_budget_and_too_large(tmp_path: Path) -> None:
    sizes = {"alpha": 6 * GIB, "beta": 5 * GIB, "huge": 20 * GIB}
    manager = make_manager(
        tmp_path,
        FakeFarm(),
        policy=Policy(min_residency=0, budget={RAM: 10 * GIB}),
        sizes=sizes,
        names=("alpha", "beta", "huge"),
    )
    (await manager.acquire("alpha")).release()
    (await manager.acquire("beta")).release()
    assert manager.state("alpha") is ModelState.UNLOADED  # 6 + 5 > 10
    with pytest.raises(ModelLoadFailed, match="budget"):
        await manager.acquire("huge")


async def test_a_busy_model_is_drained_for_a_swap_and_its_new_requests_wait(tmp_path: Path) -> None:
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm, policy=Policy(min_residency=0, max_loaded=1, swap_timeout=5))
    busy = await manager.acquire("alpha")
    beta = asyncio.create_task(manager.acquire("beta"))
    await asyncio.sleep(0.05)
    assert not beta.done()  # alpha is draining: its request in flight is not cut
    alpha_again = asyncio.create_task(manager.acquire("alpha"))
    await asyncio.sleep(0.05)
    assert not alpha_again.done()  # a new alpha request waits instead of joining the drain
    assert not stopped(farm.backends[0])
    busy.release()
    beta_lease = await beta
    assert manager.state("beta") is ModelState.LOADED
    assert stopped(farm.backends[0])
    assert not alpha_again.done()  # now beta is busy; alpha waits for its turn
    beta_lease.release()
    (await alpha_again).release()
    assert manager.state("alpha") is ModelState.LOADED
    assert manager.state("beta") is ModelState.UNLOADED


async def test_swap_times_out_with_retry_after(tmp_path: Path) -> None:
    entries = [ModelEntry(id="alpha", path=tmp_path / "alpha.gguf", pinned=True)]
    manager = make_manager(
        tmp_path, FakeFarm(), policy=Policy(min_residency=0, max_loaded=1, swap_timeout=0.2), entries=entries
    )
    (await manager.acquire("alpha")).release()
    with pytest.raises(Unavailable) as info:
        await manager.acquire("beta")
    assert info.value.headers["Retry-After"]


async def test_exclusive_group_swaps_members(tmp_path: Path) -> None:
    entries = [ModelEntry(id=n, path=tmp_path / f"{n}.gguf", group="gpu") for n in ("alpha", "beta")]
    manager = make_manager(
        tmp_path,
        FakeFarm(),
        policy=Policy(min_residency=0, exclusive_groups=frozenset({"gpu"})),
        entries=entries,
        names=("alpha", "beta", "free"),
    )
    (await manager.acquire("free")).release()
    (await manager.acquire("alpha")).release()
    (await manager.acquire("beta")).release()
    assert [manager.state(n) for n in ("alpha", "beta", "free")] == [
        ModelState.UNLOADED,
        ModelState.LOADED,
        ModelState.LOADED,
    ]


async def test_aliases_and_dummy_names(tmp_path: Path) -> None:
    entries = [ModelEntry(id="alpha", path=tmp_path / "alpha.gguf", aliases=["a1"])]
    clock = Clock()
    manager = make_manager(
        tmp_path, FakeFarm(), clock, policy=Policy(min_residency=0, dummy_names=frozenset({"gpt-4o"})), entries=entries
    )
    lease = await manager.acquire("a1")
    assert lease.model_id == "alpha"
    lease.release()
    clock.now += 1
    (await manager.acquire("beta")).release()
    assert manager.resolve("gpt-4o").id == "beta"  # the most recently used loaded model
    clock.now += 1
    (await manager.acquire("a1")).release()
    assert manager.resolve("gpt-4o").id == "alpha"


async def test_unload_waits_for_requests_in_flight(tmp_path: Path) -> None:
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm, policy=Policy(min_residency=0, unload_grace=5))
    lease = await manager.acquire("alpha")
    unloading = asyncio.create_task(manager.unload("alpha"))
    await asyncio.sleep(0.05)
    assert not unloading.done() and not stopped(farm.backends[0])
    lease.release()
    await unloading
    assert stopped(farm.backends[0])
    assert manager.state("alpha") is ModelState.UNLOADED


async def test_unload_and_shutdown_stop_backends(tmp_path: Path) -> None:
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm)
    (await manager.acquire("alpha")).release()
    (await manager.acquire("beta")).release()
    await manager.unload("alpha")
    assert manager.state("alpha") is ModelState.UNLOADED
    await manager.shutdown()
    assert stopped(farm.backends[1])
    with pytest.raises(Unavailable):
        await manager.acquire("alpha")


async def test_illegal_transition_is_a_bug(tmp_path: Path) -> None:
    manager = make_manager(tmp_path, FakeFarm())
    record = manager._record("alpha")
    with pytest.raises(RuntimeError, match="illegal"):
        manager._transition(record, ModelState.LOADED)


async def test_alternating_demand_for_two_models_never_fails_or_livelocks(tmp_path: Path) -> None:
    import time

    farm = FakeFarm(start_delay=0.01)
    manager = make_manager(
        tmp_path,
        farm,
        policy=Policy(max_loaded=1, swap_timeout=10, min_residency=0.02),
        clock=time.monotonic,  # type: ignore[arg-type]
    )
    served: list[str] = []

    async def client(index: int) -> None:
        for turn in range(10):
            name = "alpha" if (index + turn) % 2 else "beta"
            lease = await manager.acquire(name)
            assert manager.state(name) is ModelState.LOADED
            await asyncio.sleep(0.005)
            served.append(lease.model_id)
            lease.release()

    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(8))), 30)
    assert len(served) == 80
    assert farm.starts >= 3  # they really swapped
    assert sum(1 for b in farm.backends if not b.stopped) <= 1


async def test_a_freshly_loaded_model_is_not_evicted_at_once(tmp_path: Path) -> None:
    clock = Clock()
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm, clock, policy=Policy(max_loaded=1, min_residency=5, swap_timeout=0.3))
    (await manager.acquire("alpha")).release()
    with pytest.raises(Unavailable):
        await manager.acquire("beta")  # alpha was loaded a moment ago
    clock.now += 6
    (await manager.acquire("beta")).release()
    assert manager.state("alpha") is ModelState.UNLOADED


async def test_slots_give_way_to_the_memory_budget_unless_parallel_is_set(tmp_path: Path) -> None:
    farm = FakeFarm()
    entries = [
        ModelEntry(id="alpha", path=tmp_path / "alpha.gguf"),
        ModelEntry(id="beta", path=tmp_path / "beta.gguf", parallel=4),
    ]
    manager = make_manager(tmp_path, farm, policy=Policy(min_residency=0, budget={RAM: 3 * GIB}), entries=entries)
    manager._estimate = lambda spec: {RAM: spec.parallel * GIB}  # one GiB per slot
    (await manager.acquire("alpha")).release()
    assert farm.backends[0].spec.parallel == 3  # the default 4 would not fit: 3 slots do
    assert {s.id: s for s in manager.statuses()}["alpha"].memory == 3 * GIB
    with pytest.raises(ModelLoadFailed, match="budget"):
        await manager.acquire("beta")  # an explicit `parallel` is kept, and refused


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # (a sync test)
def test_budgets_are_ram_and_each_gpu(monkeypatch: pytest.MonkeyPatch, anyio_backend: str) -> None:
    h100 = [GpuMemory(index=i, name="H100", used_bytes=0, total_bytes=80 * GIB) for i in range(2)]
    monkeypatch.setattr(services, "read_gpu_memory", lambda: h100)
    machine = services.Machine.probe()
    assert machine.devices == (Device(0, 80 * GIB), Device(1, 80 * GIB))
    limits = services.policy_for(Settings(), machine).budget
    assert limits == {RAM: int(machine_memory() * 0.8), "gpu0": int(80 * GIB * 0.8), "gpu1": int(80 * GIB * 0.8)}
    custom = Settings(memory_budget="12GiB", gpu_memory_fraction=0.5)  # type: ignore[arg-type]
    assert services.policy_for(custom, machine).budget == {RAM: 12 * GIB, "gpu0": 40 * GIB, "gpu1": 40 * GIB}
    monkeypatch.setattr(services, "read_gpu_memory", list)  # no GPU
    assert services.policy_for(Settings()).budget == {RAM: int(machine_memory() * 0.8)}


async def test_many_requests_that_find_their_engine_gone_share_one_fresh_engine(tmp_path: Path) -> None:
    farm = FakeFarm(supervised=True)
    manager = make_manager(tmp_path, farm)
    leases = [await manager.acquire("alpha") for _ in range(5)]
    farm.backends[0].crash(-9)  # (noticed by nobody yet when the requests ask)
    fresh = await asyncio.gather(*(manager.replace(lease, "refused") for lease in leases))
    assert farm.starts == 2 and all(f is not None and f.backend is farm.backends[1] for f in fresh)
    for lease in [*leases, *fresh]:
        assert lease is not None
        lease.release()
    assert {s.id: s for s in manager.statuses()}["alpha"].in_flight == 0


async def test_an_engine_that_still_answers_is_kept(tmp_path: Path) -> None:
    farm = FakeFarm(supervised=True)
    manager = make_manager(tmp_path, farm)
    lease = await manager.acquire("alpha")
    again = await manager.replace(lease, "a reset connection")
    assert again is not None and again.backend is lease.backend and farm.starts == 1
    lease.release()
    again.release()


async def test_engines_the_manager_does_not_run_are_not_replaced(tmp_path: Path) -> None:
    farm = FakeFarm()  # (not supervised: as a remote engine)
    manager = make_manager(tmp_path, farm)
    lease = await manager.acquire("alpha")
    assert await manager.replace(lease, "refused") is None
    lease.release()


async def test_swap_wait_lets_a_busy_model_serve_its_queue_first(tmp_path: Path) -> None:
    """Swap-aware: while `beta`'s requests wait (up to swap_wait), `alpha` keeps serving new requests; then it goes."""
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm, policy=Policy(min_residency=0, max_loaded=1, swap_timeout=5, swap_wait=0.3))
    busy = await manager.acquire("alpha")
    started = asyncio.get_running_loop().time()
    beta = asyncio.create_task(manager.acquire("beta"))
    await asyncio.sleep(0.05)
    assert not beta.done()
    more = await asyncio.wait_for(manager.acquire("alpha"), 1)  # alpha is not leaving: it serves on
    busy.release()
    await asyncio.sleep(0.05)
    assert not beta.done() and not stopped(farm.backends[0])  # still busy (`more`), and the wait is not over
    await asyncio.sleep(0.3)  # past swap_wait: alpha is made to go, so new alpha requests wait now
    later = asyncio.create_task(manager.acquire("alpha"))
    await asyncio.sleep(0.05)
    assert not later.done() and not beta.done()
    more.release()  # the last alpha request ends: alpha unloads, beta loads
    (await asyncio.wait_for(beta, 2)).release()
    assert asyncio.get_running_loop().time() - started >= 0.3
    assert stopped(farm.backends[0])
    (await asyncio.wait_for(later, 2)).release()  # then alpha again (beta is idle)
    assert manager.state("alpha") is ModelState.LOADED


async def test_swap_wait_does_not_hold_an_idle_model(tmp_path: Path) -> None:
    farm = FakeFarm()
    manager = make_manager(tmp_path, farm, policy=Policy(min_residency=0, max_loaded=1, swap_timeout=5, swap_wait=30))
    (await manager.acquire("alpha")).release()
    (await asyncio.wait_for(manager.acquire("beta"), 2)).release()  # nobody uses alpha: no waiting
    assert manager.state("alpha") is ModelState.UNLOADED
