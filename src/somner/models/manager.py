"""The model manager: the one owner of every model's lifecycle.

Design note. Each known model has a `ManagedModel` record whose state only this module changes, and only
under that model's lock, through `_transition` (illegal transitions are bugs and raise). Callers never read a
state and act on it; they ask: `acquire(name)` returns a `Lease` on a ready backend, loading it first if
needed. Concurrent first requests queue on the lock, so a model is loaded exactly once; a load that fails
makes the requests waiting for it fail with the same error, and further attempts wait out a backoff, so a
broken model cannot cause a storm of restarts. A watcher notices a backend that exits on its own; in-flight
requests fail through their streams and the next request starts a fresh backend.
A lease counts as in flight until released (by the stream that uses it, when it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from somner.errors import ModelLoadFailed, SomnerError, Unavailable
from somner.models.backends.base import Backend
from somner.models.registry import ModelRegistry, ModelSpec

log = logging.getLogger(__name__)

Clock = Callable[[], float]
BackendFactory = Callable[[ModelSpec], Backend]

_MAX_BACKOFF = 60.0


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


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failed loads before trying again."""
    return 0.0 if failures <= 0 else min(2.0 ** (failures - 1), _MAX_BACKOFF)


@dataclass
class ManagedModel:
    spec: ModelSpec
    state: ModelState = ModelState.UNLOADED
    backend: Backend | None = None
    in_flight: int = 0
    loaded_at: float | None = None
    last_used: float | None = None
    failures: int = 0
    failed_at: float | None = None
    last_error: SomnerError | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watcher: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    id: str
    state: ModelState
    in_flight: int
    loaded_at: float | None
    last_used: float | None
    error: str | None


class Lease:
    """Permission to use a loaded backend; `release` exactly once when the request is over."""

    __slots__ = ("_manager", "_record", "_released", "backend", "model_id")

    def __init__(self, manager: ModelManager, record: ManagedModel, backend: Backend) -> None:
        self._manager = manager
        self._record = record
        self._released = False
        self.backend = backend
        self.model_id = record.spec.id

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release(self._record)


class ModelManager:
    def __init__(self, registry: ModelRegistry, factory: BackendFactory, clock: Clock = time.monotonic) -> None:
        self.registry = registry
        self._factory = factory
        self._clock = clock
        self._models: dict[str, ManagedModel] = {}
        self._closing = False

    def _record(self, model_id: str) -> ManagedModel:
        spec = self.registry.get(model_id)
        record = self._models.get(spec.id)
        if record is None or record.spec != spec:
            if record is not None and record.state is not ModelState.UNLOADED:
                return record  # the spec changed on disk while loaded; the new one applies after unload
            record = ManagedModel(spec=spec)
            self._models[spec.id] = record
        return record

    @staticmethod
    def _transition(record: ManagedModel, target: ModelState) -> None:
        if target not in _LEGAL[record.state]:
            raise RuntimeError(f"illegal model state change {record.state} -> {target} for {record.spec.id}")
        log.debug("model %s: %s -> %s", record.spec.id, record.state, target)
        record.state = target

    def state(self, model_id: str) -> ModelState:
        record = self._models.get(model_id)
        return record.state if record is not None else ModelState.UNLOADED

    def statuses(self) -> list[ModelStatus]:
        out = []
        for spec in self.registry.specs():
            record = self._models.get(spec.id)
            if record is None:
                out.append(ModelStatus(spec.id, ModelState.UNLOADED, 0, None, None, None))
                continue
            error = record.last_error.message if record.last_error is not None else None
            out.append(ModelStatus(spec.id, record.state, record.in_flight, record.loaded_at, record.last_used, error))
        return out

    def backend_of(self, model_id: str) -> Backend | None:
        record = self._models.get(model_id)
        return record.backend if record is not None and record.state is ModelState.LOADED else None

    async def acquire(self, model_id: str) -> Lease:
        """A lease on `model_id`'s backend, loading the model first when needed."""
        if self._closing:
            raise Unavailable("The server is shutting down", headers={"Retry-After": "5"})
        record = self._record(model_id)
        if record.state is ModelState.LOADED and record.backend is not None and record.backend.alive:
            return self._lease(record)
        async with record.lock:
            await self._ensure_loaded(record)
            return self._lease(record)

    def _lease(self, record: ManagedModel) -> Lease:
        assert record.backend is not None
        record.in_flight += 1
        record.last_used = self._clock()
        return Lease(self, record, record.backend)

    def _release(self, record: ManagedModel) -> None:
        record.in_flight -= 1
        record.last_used = self._clock()

    async def load(self, model_id: str) -> None:
        record = self._record(model_id)
        async with record.lock:
            await self._ensure_loaded(record)

    async def _ensure_loaded(self, record: ManagedModel) -> None:
        """Under the record's lock: make the model LOADED or raise why it cannot be."""
        if self._closing:
            raise Unavailable("The server is shutting down", headers={"Retry-After": "5"})
        if record.state is ModelState.LOADED:
            if record.backend is not None and record.backend.alive:
                return
            await self._forget_backend(record, "its engine exited")
        if record.state is ModelState.FAILED and record.failed_at is not None:
            wait = retry_delay(record.failures) - (self._clock() - record.failed_at)
            if wait > 0 and record.last_error is not None:
                error = ModelLoadFailed(record.last_error.message, headers={"Retry-After": str(int(wait) + 1)})
                raise error
        self._transition(record, ModelState.LOADING)
        backend = self._factory(record.spec)
        started = self._clock()
        try:
            await backend.start()
        except BaseException as exc:
            self._transition(record, ModelState.FAILED)
            record.failures += 1
            record.failed_at = self._clock()
            if isinstance(exc, SomnerError):
                record.last_error = exc
            elif isinstance(exc, Exception):
                log.exception("loading %s failed", record.spec.id)
                record.last_error = ModelLoadFailed(f"The model '{record.spec.id}' could not be loaded")
            else:
                raise
            raise record.last_error from None
        record.backend = backend
        record.loaded_at = self._clock()
        record.failures = 0
        record.last_error = None
        self._transition(record, ModelState.LOADED)
        record.watcher = asyncio.create_task(self._watch(record, backend), name=f"watch-{record.spec.id}")
        log.info("model %s loaded in %.2fs", record.spec.id, record.loaded_at - started)

    async def _watch(self, record: ManagedModel, backend: Backend) -> None:
        status = await backend.wait_exit()
        async with record.lock:
            if record.backend is backend and record.state is ModelState.LOADED:
                log.error("engine for %s exited unexpectedly (status %s)", record.spec.id, status)
                await self._forget_backend(record, f"its engine exited with status {status}")

    async def _forget_backend(self, record: ManagedModel, why: str) -> None:
        """Under the lock: a LOADED model whose backend died becomes FAILED (retried on the next request)."""
        backend, record.backend = record.backend, None
        self._transition(record, ModelState.FAILED)
        record.failed_at = self._clock()
        record.failures = 0  # a crash after a good load restarts at once; repeated crashes back off via loads
        record.last_error = ModelLoadFailed(f"The model '{record.spec.id}' stopped: {why}")
        if backend is not None:
            await backend.stop()

    async def unload(self, model_id: str) -> None:
        record = self._record(model_id)
        async with record.lock:
            await self._unload_locked(record)

    async def _unload_locked(self, record: ManagedModel) -> None:
        if record.state is ModelState.FAILED:
            self._transition(record, ModelState.UNLOADED)
            return
        if record.state is not ModelState.LOADED:
            return
        self._transition(record, ModelState.UNLOADING)
        backend, record.backend = record.backend, None
        watcher, record.watcher = record.watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if backend is not None:
            await backend.stop()
        record.loaded_at = None
        self._transition(record, ModelState.UNLOADED)
        log.info("model %s unloaded", record.spec.id)

    async def shutdown(self) -> None:
        """Stop every backend (in parallel). New requests are refused from now on."""
        self._closing = True
        records = list(self._models.values())

        async def stop(record: ManagedModel) -> None:
            async with record.lock:
                await self._unload_locked(record)

        await asyncio.gather(*(stop(r) for r in records), return_exceptions=True)
