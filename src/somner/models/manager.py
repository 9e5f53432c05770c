"""The model manager: the one owner of every model's lifecycle.

Design note. Each known model has a `ManagedModel` record whose state only this module changes, through
`_transition` (illegal transitions are bugs and raise). Callers never read a state and act on it; they ask:
`acquire(name)` returns a `Lease` on a ready backend, loading the model first if needed.

- Loading is single-flight: concurrent first requests queue on the model's lock and share one load. A load that
  fails fails everyone waiting for it, and later attempts wait out a growing backoff (no restart storms).
- Room: before a load, `eviction.plan` (a pure function) says which loaded models must go to respect
  `max_loaded`, the memory budget and exclusive groups. A chosen model is marked *leaving*: it takes no new
  requests (they wait for it to be gone, then load it again), finishes those in flight, and is unloaded. If no
  room can be made, the request waits, up to `swap_timeout`, then gets a 503 with Retry-After.
- Swap-aware: a model that is serving requests is not chosen to go until the requests for the newcomer have waited
  `swap_wait` (counted from the first of them), so that while two models that cannot both fit are in demand, each
  load serves a batch of requests instead of one (first come, first served would load, answer one, unload, load).
- Idle unload: when a model's last request ends, its expiry is set from the request's keep_alive, else the
  model's ttl, else the global ttl (0: unload now; negative: never). A reaper task unloads expired idle models.
  Pinned models never expire and are never evicted.
- A backend that exits on its own is noticed by a watcher; its in-flight requests fail through their streams and
  the next request starts a fresh one. A request that finds its engine gone before it had a token asks for
  `replace`: the lost engine is retired (once, however many requests noticed) and the request runs on a fresh one.
- Engines the manager runs (`Supervised` backends) have a heartbeat while they have work: one that answers none for
  `hang_timeout` seconds is hung. It is killed and a fresh one started at once; its streams fail (those that had
  not had a token run again on the fresh engine), and the model reports its health meanwhile (`/ready`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from somner.errors import ModelLoadFailed, SomnerError, Unavailable
from somner.exits import describe_exit
from somner.models.backends.base import Backend, Supervised
from somner.models.eviction import Decision, Newcomer, Resident, plan
from somner.models.memory import fit_slots
from somner.models.placement import RAM, Footprint, total
from somner.models.registry import ModelRegistry, ModelSpec

log = logging.getLogger(__name__)

Clock = Callable[[], float]
BackendFactory = Callable[[ModelSpec], Backend]
Estimator = Callable[[ModelSpec], Footprint]

_MAX_BACKOFF = 60.0
FOREVER = float("inf")
_GONE_CHECK = 1.0  # seconds a lost engine gets to answer its health check before it is retired


class ModelState(enum.StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"


_LEGAL: dict[ModelState, frozenset[ModelState]] = {
    ModelState.UNLOADED: frozenset({ModelState.LOADING}),
    ModelState.LOADING: frozenset({ModelState.LOADED, ModelState.FAILED}),
    ModelState.LOADED: frozenset({ModelState.UNLOADING, ModelState.FAILED}),
    ModelState.UNLOADING: frozenset({ModelState.UNLOADED}),
    ModelState.FAILED: frozenset({ModelState.LOADING, ModelState.UNLOADED}),
}


def _progress(record: ManagedModel) -> float | None:
    if record.state is not ModelState.LOADING or record.starting is None:
        return None
    progress = getattr(record.starting, "load_progress", None)
    return float(progress) if isinstance(progress, int | float) else None


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failed loads before trying again."""
    return 0.0 if failures <= 0 else min(2.0 ** (failures - 1), _MAX_BACKOFF)


@dataclass(frozen=True, slots=True)
class Policy:
    """The manager's knobs (from the settings)."""

    ttl: float = 300.0
    budget: Mapping[str, int] = field(default_factory=lambda: {RAM: 2**62})  # per resource (placement.py)
    max_loaded: int | None = None
    exclusive_groups: frozenset[str] = frozenset()
    swap_timeout: float = 120.0
    unload_grace: float = 60.0
    dummy_names: frozenset[str] = frozenset()
    min_residency: float = 1.0  # seconds a freshly loaded model is safe from eviction
    swap_wait: float = 0.0  # how long a newcomer's requests wait for busy models before they are made to go
    hang_timeout: float = 20.0  # an engine with work that answers no heartbeat this long is restarted (0: never)

    @property
    def heartbeat_interval(self) -> float:
        """How often a busy engine's heartbeat is checked: a few beats per `hang_timeout`."""
        return min(5.0, max(0.05, self.hang_timeout / 4))


@dataclass
class ManagedModel:
    spec: ModelSpec
    state: ModelState = ModelState.UNLOADED
    backend: Backend | None = None
    in_flight: int = 0
    loaded_at: float | None = None
    last_used: float = 0.0
    expires_at: float | None = None  # when idle; FOREVER for keep-alive -1 and pinned models
    leaving: bool = False  # chosen to go: takes no new requests
    failures: int = 0
    failed_at: float | None = None
    last_error: SomnerError | None = None
    memory: Footprint = field(default_factory=dict)  # per resource; empty until estimated
    loads: int = 0  # engine starts so far (a restart after a crash counts)
    last_progress: float = 0.0  # when a request last got a token (or the model got busy)
    health: str | None = None  # why its engine is not well now (no heartbeat, restarting after a hang); None: fine
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set while not leaving
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while nothing is in flight
    watcher: asyncio.Task[None] | None = None
    heartbeat: asyncio.Task[None] | None = None
    starting: Backend | None = None  # the backend being started while LOADING (its load progress)
    waiters: int = 0  # requests waiting for this model to be loaded
    wanted_since: float | None = None  # when the first of them began waiting

    def __post_init__(self) -> None:
        self.gone.set()
        self.idle.set()


@dataclass(frozen=True, slots=True)
class ModelStatus:
    id: str
    state: ModelState
    backend: str
    in_flight: int
    memory: int
    loaded_at: float | None
    last_used: float | None
    expires_at: float | None
    pinned: bool
    loads: int
    error: str | None
    last_progress: float | None = None
    health: str | None = None  # see ManagedModel.health
    progress: float | None = None  # while loading: 0..1, as far as the engine reports it
    placement: Footprint = field(default_factory=dict)  # the memory estimate per resource (ram, gpu0, ...)


class Lease:
    """Permission to use a loaded backend; `release` exactly once when the request is over."""

    __slots__ = ("_manager", "_record", "_released", "backend", "model_id", "spec")

    def __init__(self, manager: ModelManager, record: ManagedModel, backend: Backend) -> None:
        self._manager = manager
        self._record = record
        self._released = False
        self.backend = backend
        self.model_id = record.spec.id
        self.spec = record.spec

    def progress(self) -> None:
        """The engine produced something for this request (readiness watches for engines that stop)."""
        self._record.last_progress = self._manager._clock()

    def release(self, keep_alive: float | None = None) -> None:
        """End the request. `keep_alive` (seconds; 0 = unload now, negative = forever) sets how long the model
        stays loaded once idle, instead of its ttl."""
        if not self._released:
            self._released = True
            self._manager._release(self._record, keep_alive)


class ModelManager:
    def __init__(
        self,
        registry: ModelRegistry,
        factory: BackendFactory,
        *,
        policy: Policy | None = None,
        estimate: Estimator = lambda spec: {},
        clock: Clock = time.monotonic,
    ) -> None:
        self.registry = registry
        self.policy = policy or Policy()
        self._factory = factory
        self._estimate = estimate
        self._clock = clock
        self._models: dict[str, ManagedModel] = {}
        self._room = asyncio.Condition()  # decisions about what is resident; notified when room may appear
        self._claimant: str | None = None  # the model that made others go and has not started loading yet
        self._expiry_changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False
        # Told how each load ended: (model id, seconds, or None for a failure). Metrics listen here.
        self.on_load: Callable[[str, float | None], None] | None = None

    # -- names and records -------------------------------------------------------------------------------

    def resolve(self, name: str) -> ModelSpec:
        """The model a requested name refers to (ids, aliases, and the configured dummy names)."""
        if name in self.policy.dummy_names and self.registry.find(name) is None:
            loaded = [r for r in self._models.values() if r.state is ModelState.LOADED]
            if loaded:
                return max(loaded, key=lambda r: r.last_used).spec
            target = self.registry.default_id or next(iter(self.registry.ids()), None)
            if target is not None:
                return self.registry.get(target)
        return self.registry.get(name)

    def _record(self, name: str) -> ManagedModel:
        spec = self.resolve(name)
        record = self._models.get(spec.id)
        if record is None:
            record = ManagedModel(spec=spec)
            self._models[spec.id] = record
        elif record.spec != spec and record.state in (ModelState.UNLOADED, ModelState.FAILED):
            record.spec = spec  # its settings changed on disk (or slots were fitted); they apply from the next load
            record.memory = {}
        return record

    @staticmethod
    def _transition(record: ManagedModel, target: ModelState) -> None:
        if target not in _LEGAL[record.state]:
            raise RuntimeError(f"illegal model state change {record.state} -> {target} for {record.spec.id}")
        log.debug("model %s: %s -> %s", record.spec.id, record.state, target)
        record.state = target

    def state(self, name: str) -> ModelState:
        spec = self.registry.find(name)
        record = self._models.get(spec.id) if spec is not None else None
        return record.state if record is not None else ModelState.UNLOADED

    def statuses(self) -> list[ModelStatus]:
        out = []
        for spec in self.registry.specs():
            record = self._models.get(spec.id) or ManagedModel(spec=spec)
            out.append(
                ModelStatus(
                    id=spec.id,
                    state=record.state,
                    backend=spec.kind,
                    in_flight=record.in_flight,
                    memory=total(record.memory),
                    loaded_at=record.loaded_at,
                    last_used=record.last_used or None,
                    expires_at=record.expires_at if record.state is ModelState.LOADED else None,
                    pinned=spec.entry.pinned,
                    loads=record.loads,
                    error=record.last_error.message if record.last_error is not None else None,
                    last_progress=record.last_progress if record.in_flight else None,
                    health=record.health,
                    progress=_progress(record),
                    placement=dict(record.memory),
                )
            )
        return out

    def stalled(self, timeout: float) -> list[str]:
        """Models with requests in flight that have produced nothing for `timeout` seconds."""
        now = self._clock()
        return [r.spec.id for r in self._models.values() if r.in_flight > 0 and now - r.last_progress > timeout]

    def backend_of(self, name: str) -> Backend | None:
        spec = self.registry.find(name)
        record = self._models.get(spec.id) if spec is not None else None
        return record.backend if record is not None and record.state is ModelState.LOADED else None

    # -- leases -------------------------------------------------------------------------------------------

    async def acquire(self, name: str) -> Lease:
        """A lease on the backend serving `name`, loading the model first when needed."""
        waiting: ManagedModel | None = None  # the record this request is counted as waiting for
        try:
            while True:
                self._check_open()
                record = self._record(name)  # (again after each wait: a dummy name may now mean another model)
                if self._usable(record):
                    return self._lease(record)
                if waiting is not record:
                    self._stop_waiting(waiting)
                    waiting = record
                    record.waiters += 1
                    if record.wanted_since is None:
                        record.wanted_since = time.monotonic()  # real time: it bounds real waiting (swap_wait)
                if record.leaving:
                    await record.gone.wait()  # it is being unloaded; load it again once it is gone
                    continue
                async with record.lock:
                    if self._is_leaving(record):  # it may have been chosen to go while we waited for the lock
                        continue
                    await self._ensure_loaded(record)
                    if self._usable(record):
                        return self._lease(record)
        finally:
            self._stop_waiting(waiting)

    @staticmethod
    def _stop_waiting(record: ManagedModel | None) -> None:
        if record is not None:
            record.waiters -= 1
            if record.waiters == 0:
                record.wanted_since = None

    def _check_open(self) -> None:
        if self._closing:
            raise Unavailable("The server is shutting down", headers={"Retry-After": "5"})

    @staticmethod
    def _is_leaving(record: ManagedModel) -> bool:
        return record.leaving

    @staticmethod
    def _usable(record: ManagedModel) -> bool:
        return (
            record.state is ModelState.LOADED
            and not record.leaving
            and record.backend is not None
            and record.backend.alive
        )

    def _lease(self, record: ManagedModel) -> Lease:
        assert record.backend is not None
        if record.in_flight == 0:
            record.last_progress = self._clock()  # idle until now: the wait for progress starts here
        record.in_flight += 1
        record.idle.clear()
        record.last_used = self._clock()
        record.expires_at = None
        return Lease(self, record, record.backend)

    def _release(self, record: ManagedModel, keep_alive: float | None) -> None:
        record.in_flight -= 1
        now = self._clock()
        record.last_used = now
        if keep_alive is None:
            keep_alive = record.spec.entry.ttl if record.spec.entry.ttl is not None else self.policy.ttl
        if record.in_flight == 0:  # the last request to finish sets the timer (as Ollama does)
            record.idle.set()
            record.expires_at = FOREVER if record.spec.entry.pinned or keep_alive < 0 else now + keep_alive
            self._expiry_changed.set()
        self._notify_room()

    def _notify_room(self) -> None:
        async def notify() -> None:
            async with self._room:
                self._room.notify_all()

        task = asyncio.ensure_future(notify())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    # -- loading ------------------------------------------------------------------------------------------

    async def load(self, name: str) -> None:
        (await self.acquire(name)).release()

    async def _ensure_loaded(self, record: ManagedModel) -> None:
        """Under the record's lock: make the model LOADED or raise why it cannot be."""
        self._check_open()
        if record.state is ModelState.LOADED:
            if record.backend is not None and record.backend.alive:
                return
            await self._forget_backend(record, "its engine exited")
        if record.state is ModelState.FAILED and record.failed_at is not None and record.last_error is not None:
            wait = retry_delay(record.failures) - (self._clock() - record.failed_at)
            if wait > 0:
                raise ModelLoadFailed(record.last_error.message, headers={"Retry-After": str(int(wait) + 1)})
        if not record.memory:
            record.spec = await asyncio.to_thread(fit_slots, record.spec, self.policy.budget, self._estimate)
            record.memory = await asyncio.to_thread(self._estimate, record.spec)
        await self._make_room(record)
        self._transition(record, ModelState.LOADING)
        self._unclaim(record)
        record.loads += 1
        backend = self._factory(record.spec)
        started = self._clock()
        record.starting = backend
        try:
            await backend.start()
        except BaseException as exc:
            if self.on_load is not None and isinstance(exc, Exception):
                self.on_load(record.spec.id, None)
            self._transition(record, ModelState.FAILED)
            record.failures += 1
            record.failed_at = self._clock()
            self._notify_room()
            if isinstance(exc, SomnerError):
                record.last_error = exc
            elif isinstance(exc, Exception):
                log.exception("loading %s failed", record.spec.id)
                record.last_error = ModelLoadFailed(f"The model '{record.spec.id}' could not be loaded")
            else:
                raise
            raise record.last_error from None
        finally:
            record.starting = None
        self._loaded(record, backend, started)

    def _loaded(self, record: ManagedModel, backend: Backend, started: float) -> None:
        """`backend` is up: `record` is LOADED, watched and (for engines the manager runs) heart-beaten."""
        record.backend = backend
        record.loaded_at = self._clock()
        record.last_used = record.loaded_at
        record.failures = 0
        record.last_error = None
        self._transition(record, ModelState.LOADED)
        record.watcher = asyncio.create_task(self._watch(record, backend), name=f"watch-{record.spec.id}")
        if isinstance(backend, Supervised) and self.policy.hang_timeout > 0:
            record.heartbeat = asyncio.create_task(self._heartbeat(record, backend), name=f"heartbeat-{record.spec.id}")
        if self.on_load is not None:
            self.on_load(record.spec.id, record.loaded_at - started)
        log.info("model %s loaded in %.2fs", record.spec.id, record.loaded_at - started)

    async def _make_room(self, record: ManagedModel) -> None:
        """Unload (draining) whatever must go before `record` loads; wait up to swap_timeout for room.

        A model that made others go has the room they leave: until it starts loading, other newcomers wait (else
        a request for a model just unloaded could take the room back, and the two would evict each other)."""
        try:
            await self._make_room_claiming(record)
        except BaseException:
            self._unclaim(record)
            raise

    async def _make_room_claiming(self, record: ManagedModel) -> None:
        deadline = time.monotonic() + self.policy.swap_timeout  # real time: it bounds real waiting
        newcomer = Newcomer(record.spec.id, record.memory, record.spec.entry.group)
        while True:
            async with self._room:
                patience = self._patience(record)
                if self._claimant not in (None, record.spec.id):
                    decision = Decision(wait=True, reason=f"'{self._claimant}' is being loaded in its place")
                else:
                    decision = plan(
                        self._residents(),
                        newcomer,
                        budget=self.policy.budget,
                        max_loaded=self.policy.max_loaded,
                        exclusive_groups=self.policy.exclusive_groups,
                        keep_busy=patience > 0,
                    )
                if decision.too_large:
                    raise ModelLoadFailed(f"The model '{record.spec.id}' cannot be loaded: {decision.reason}")
                victims = [self._models[model_id] for model_id in decision.evict]
                if not decision.wait and not victims:
                    return
                for victim in victims:
                    self._begin_leaving(victim)
                if victims:
                    self._claimant = record.spec.id
                if decision.wait:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._no_room(record, decision.reason)
                    # Re-plan when woken (a request ended, a model left), at least every min_residency, and when
                    # the wait for busy models is over.
                    step = min(remaining, max(0.05, self.policy.min_residency))
                    if patience > 0:
                        step = min(step, max(0.01, patience))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(step):
                            await self._room.wait()
                    continue
            results = await asyncio.gather(
                *(self._drain_and_unload(victim, deadline) for victim in victims), return_exceptions=True
            )
            if any(isinstance(result, BaseException) for result in results):
                raise self._no_room(record, "models in use did not finish in time")

    def _unclaim(self, record: ManagedModel) -> None:
        """`record` starts loading (its memory counts from now) or gave up: the room it claimed is free."""
        if self._claimant == record.spec.id:
            self._claimant = None
            self._notify_room()

    def _patience(self, record: ManagedModel) -> float:
        """How much longer `record`'s requests wait for busy models before those are made to go (swap_wait)."""
        if self.policy.swap_wait <= 0 or record.wanted_since is None:
            return 0.0
        return max(0.0, record.wanted_since + self.policy.swap_wait - time.monotonic())

    def _no_room(self, record: ManagedModel, reason: str) -> Unavailable:
        return Unavailable(
            f"No room to load '{record.spec.id}' within {self.policy.swap_timeout:g}s: {reason}",
            headers={"Retry-After": "10"},
        )

    def _residents(self) -> list[Resident]:
        now = self._clock()
        return [
            Resident(
                id=r.spec.id,
                memory=r.memory,
                in_flight=r.in_flight,
                last_used=r.last_used,
                # A model still loading, or loaded a moment ago, is not evicted yet: the requests that waited
                # for it get served first (otherwise two models in demand could evict each other forever).
                pinned=r.spec.entry.pinned
                or r.state is ModelState.LOADING
                or (r.loaded_at is not None and now - r.loaded_at < self.policy.min_residency),
                group=r.spec.entry.group,
                leaving=r.leaving or r.state is ModelState.UNLOADING,
            )
            for r in self._models.values()
            if r.state in (ModelState.LOADING, ModelState.LOADED, ModelState.UNLOADING)
        ]

    @staticmethod
    def _begin_leaving(record: ManagedModel) -> None:
        log.debug("model %s: leaving (%d in flight)", record.spec.id, record.in_flight)
        record.leaving = True
        record.gone.clear()

    @staticmethod
    def _stay(record: ManagedModel) -> None:
        record.leaving = False
        record.gone.set()

    async def _drain_and_unload(self, record: ManagedModel, deadline: float) -> None:
        """A leaving model: wait for its requests to finish (up to `deadline`), then unload it. If they do not
        finish in time, it stays and serves on, and TimeoutError is raised."""
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await record.idle.wait()
        except TimeoutError:
            self._stay(record)
            raise
        async with record.lock:
            await self._unload_locked(record)

    # -- unloading ----------------------------------------------------------------------------------------

    async def unload(self, name: str, *, grace: float | None = None) -> None:
        """Unload now: new requests wait for a reload, those in flight get `grace` seconds (default
        unload_grace) to finish before the engine stops under them."""
        record = self._record(name)
        if record.state is not ModelState.LOADED and record.state is not ModelState.FAILED:
            return
        self._begin_leaving(record)
        try:
            wait = self.policy.unload_grace if grace is None else grace
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await record.idle.wait()
            async with record.lock:
                await self._unload_locked(record)
        finally:
            self._stay(record)

    async def unload_all(self) -> None:
        await asyncio.gather(*(self.unload(r.spec.id) for r in list(self._models.values())))

    async def _unload_locked(self, record: ManagedModel) -> None:
        try:
            if record.state is ModelState.FAILED:
                self._transition(record, ModelState.UNLOADED)
                return
            if record.state is not ModelState.LOADED:
                return
            self._transition(record, ModelState.UNLOADING)
            log.info("model %s unloading", record.spec.id)
            backend, record.backend = record.backend, None
            await self._end_tasks(record)
            if backend is not None:
                await backend.stop()
            record.loaded_at = None
            record.expires_at = None
            self._transition(record, ModelState.UNLOADED)
            log.info("model %s unloaded", record.spec.id)
        finally:
            self._stay(record)
            self._notify_room()

    @staticmethod
    async def _end_tasks(record: ManagedModel) -> None:
        """Stop the tasks that watch the record's engine (not the calling task, when it is one of them)."""
        current = asyncio.current_task()
        for task in (record.watcher, record.heartbeat):
            if task is not None and task is not current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        record.watcher = record.heartbeat = None

    async def _watch(self, record: ManagedModel, backend: Backend) -> None:
        status = await backend.wait_exit()
        async with record.lock:
            if record.backend is backend and record.state is ModelState.LOADED:
                log.error("engine for %s %s unexpectedly", record.spec.id, describe_exit(status))
                await self._forget_backend(record, f"its engine {describe_exit(status)}")

    async def _forget_backend(self, record: ManagedModel, why: str, *, kill: bool = False) -> None:
        """Under the lock: a LOADED model whose backend died (or is killed here) becomes FAILED (the next request
        starts a fresh engine at once)."""
        backend, record.backend = record.backend, None
        self._transition(record, ModelState.FAILED)
        record.failed_at = self._clock()
        record.failures = 0  # a crash after a good load restarts at once; repeated failed loads back off
        record.last_error = ModelLoadFailed(f"The model '{record.spec.id}' stopped: {why}")
        await self._end_tasks(record)
        if backend is not None:
            if kill and isinstance(backend, Supervised):
                await backend.kill()
            await backend.stop()
        self._notify_room()

    # -- engines that are gone or hung ---------------------------------------------------------------------

    async def replace(self, lease: Lease, why: str) -> Lease | None:
        """`lease`'s engine was not there for a request that had no token yet (refused, reset, exited): retire
        that engine, unless someone already has, and lease the model again, which starts a fresh engine or waits
        for the one being started. The old lease stays held (the caller releases it once it has the new one).
        None for engines the manager does not run (remote ones): there is nothing to restart."""
        backend = lease.backend
        if not isinstance(backend, Supervised):
            return None
        record = lease._record
        async with record.lock:
            if record.backend is backend and record.state is ModelState.LOADED:
                if backend.alive and await backend.responsive(_GONE_CHECK):
                    log.warning("engine for %s failed a request (%s) but answers; retrying on it", record.spec.id, why)
                else:
                    log.error("engine for %s is gone (%s); starting a fresh one", record.spec.id, why)
                    await self._forget_backend(record, why, kill=True)
        return await self.acquire(record.spec.id)

    async def _heartbeat(self, record: ManagedModel, backend: Backend) -> None:
        """While the model has requests in flight, its engine must answer a health check at least every
        `hang_timeout` seconds (real time); otherwise it is hung and recycled."""
        assert isinstance(backend, Supervised)
        interval = self.policy.heartbeat_interval
        answered = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            if record.in_flight == 0:
                answered = time.monotonic()  # idle: the wait for an answer starts with the next request
                record.health = None
                continue
            if await backend.responsive(interval):
                answered = time.monotonic()
                record.health = None
                continue
            silent = time.monotonic() - answered
            record.health = f"its engine has not answered for {silent:.0f}s"
            if silent >= self.policy.hang_timeout:
                await self._recycle(record, backend, silent)
                return

    async def _recycle(self, record: ManagedModel, backend: Backend, silent: float) -> None:
        """A hung engine: kill it (its streams end with an error; those without a token yet run again on the
        fresh engine), start a fresh one at once, and report the model unhealthy until it is ready."""
        log.error(
            "engine for %s answered no heartbeat for %.1fs with %d request(s) in flight: killing it and starting "
            "a fresh one",
            record.spec.id,
            silent,
            record.in_flight,
        )
        record.health = "restarting: its engine stopped answering"
        try:
            async with record.lock:
                if record.backend is not backend or record.state is not ModelState.LOADED:
                    return
                await self._forget_backend(record, f"its engine stopped answering for {silent:.1f}s", kill=True)
                with contextlib.suppress(SomnerError):  # (a failed start is reported to the next request)
                    await self._ensure_loaded(record)
        finally:
            record.health = None

    # -- idle expiry --------------------------------------------------------------------------------------

    def expired(self, now: float | None = None) -> list[str]:
        """Loaded, idle models whose keep-alive has run out."""
        now = self._clock() if now is None else now
        return [
            r.spec.id
            for r in self._models.values()
            if r.state is ModelState.LOADED
            and r.in_flight == 0
            and not r.leaving
            and r.expires_at is not None
            and r.expires_at <= now
        ]

    async def reap(self) -> list[str]:
        """Unload every expired model now; returns their ids."""
        ids = self.expired()
        for model_id in ids:
            record = self._models[model_id]
            if record.in_flight == 0 and not record.leaving:
                self._begin_leaving(record)
                async with record.lock:
                    await self._unload_locked(record)
        return ids

    def _next_expiry(self) -> float | None:
        times = [
            r.expires_at
            for r in self._models.values()
            if r.state is ModelState.LOADED and r.in_flight == 0 and r.expires_at is not None
        ]
        soonest = min(times, default=FOREVER)
        return None if soonest == FOREVER else soonest

    async def _reap_forever(self) -> None:
        while True:
            self._expiry_changed.clear()
            await self.reap()
            deadline = self._next_expiry()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow the cancel that stops this loop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._expiry_changed.wait()

    # -- start and stop -----------------------------------------------------------------------------------

    async def start(self, preload: list[str]) -> None:
        """Start the reaper and load the `preload` models (pinned models are loaded too)."""
        self._reaper = asyncio.create_task(self._reap_forever(), name="model-reaper")
        names = list(dict.fromkeys([*preload, *(s.id for s in self.registry.specs() if s.entry.pinned)]))
        for name in names:
            await self.load(name)

    async def shutdown(self) -> None:
        """Stop every backend (in parallel). New requests are refused from now on."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        records = list(self._models.values())

        async def stop(record: ManagedModel) -> None:
            async with record.lock:
                await self._unload_locked(record)

        await asyncio.gather(*(stop(r) for r in records), return_exceptions=True)
