"""The object graph handed to routes. Built by `build_services`, started and stopped by the app's lifespan.

There are no module-level singletons: tests build their own `Services` (or a whole app) with their settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import importlib.util
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from somner.errors import SomnerError
from somner.gateway.admission import Gateway
from somner.gateway.auth import Authenticator
from somner.gateway.bootstrap import ensure_admin_key
from somner.gateway.generations import Generations
from somner.gateway.queue import FairQueue
from somner.gateway.ratelimit import Limiter, RateLimiter
from somner.gateway.ratelimit_redis import RedisLimiter
from somner.gateway.usage import UsageRecorder
from somner.models.backends import head_start
from somner.models.backends.base import Backend
from somner.models.backends.exl3 import Exl3WorkerBackend
from somner.models.backends.pool import pool_for
from somner.models.backends.process import ProcessBackend
from somner.models.backends.upstream import UpstreamBackend
from somner.models.backends.worker import WorkerBackend, WorkerPaths
from somner.models.capabilities import CapabilityBook
from somner.models.manager import BackendFactory, ModelManager, ModelState, Policy
from somner.models.memory import default_budget, estimate_bytes
from somner.models.placement import Device, Footprint, budgets, gpu, gpu_problem, place
from somner.models.presets import SamplerPresets
from somner.models.registry import ModelConfigError, ModelRegistry, ModelSpec
from somner.observability.gpu import GpuMonitor, read_gpu_memory
from somner.observability.metrics import GpuGauge, Metrics, ModelGauge
from somner.observability.request_feed import RequestFeed
from somner.settings import Settings, resolve_data_dir, resolve_dir, resolve_models_dir
from somner.store.db import Database, StoreUnavailable, sqlite_url
from somner.store.keys import KeyStore
from somner.store.usage import UsageStore
from somner.wire.openai.decode import sampler_fields

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Paths:
    data_dir: Path
    models_dir: Path
    log_dir: Path
    run_dir: Path  # private, short-lived: engine sockets
    templates_dir: Path  # these three are read when they exist (nothing creates them)
    loras_dir: Path
    sampler_presets_dir: Path


def make_paths(settings: Settings) -> Paths:
    data_dir = resolve_data_dir(settings)
    models_dir = resolve_models_dir(settings, data_dir)
    for directory in (data_dir, models_dir, data_dir / "logs"):
        directory.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="somner-"))  # mode 0700, and short enough for socket paths
    return Paths(
        data_dir=data_dir,
        models_dir=models_dir,
        log_dir=data_dir / "logs",
        run_dir=run_dir,
        templates_dir=resolve_dir(settings.templates_dir, data_dir, "templates"),
        loras_dir=resolve_dir(settings.loras_dir, data_dir, "loras"),
        sampler_presets_dir=resolve_dir(settings.sampler_presets_dir, data_dir, "sampler_overrides"),
    )


def backend_factory(settings: Settings, paths: Paths) -> BackendFactory:
    counter = itertools.count()
    worker_paths = WorkerPaths(
        run_dir=paths.run_dir,
        log_dir=paths.log_dir,
        log_max_bytes=int(settings.log_max_bytes),
        log_keep=settings.log_keep,
        tracebacks=not settings.strict_privacy,
    )

    def make(spec: ModelSpec) -> Backend:
        if spec.kind == "process":
            return ProcessBackend(
                spec,
                paths.log_dir,
                settings.engine,
                log_max_bytes=int(settings.log_max_bytes),
                log_keep=settings.log_keep,
            )
        if spec.kind == "upstream":
            return UpstreamBackend(spec, settings.engine)
        if spec.kind == "pool":
            return pool_for(spec, make)
        if spec.kind == "exllamav3":
            return Exl3WorkerBackend(spec, worker_paths, settings.engine, next(counter))
        return WorkerBackend(spec, worker_paths, settings.engine, next(counter))

    return make


def gpu_devices() -> list[Device]:
    """The NVIDIA GPUs there are (NVML, else nvidia-smi), as the memory budgets see them."""
    return [Device(index=g.index, total_bytes=g.total_bytes) for g in read_gpu_memory()]


def llama_gpu_build() -> bool:
    """Whether the installed llama.cpp can offload to a GPU: its GPU backend library ships beside it (a file
    check; importing llama.cpp into the gateway would cost start-up time)."""
    found = importlib.util.find_spec("llama_cpp")
    if found is None or found.origin is None:
        return False
    libraries = Path(found.origin).parent / "lib"
    return any(any(libraries.glob(f"libggml-{kind}*")) for kind in ("cuda", "hip", "vulkan", "metal", "sycl"))


@dataclass(frozen=True, slots=True)
class Machine:
    """What the budgets are made of: this machine's GPUs, and whether llama.cpp here can use them."""

    devices: tuple[Device, ...]
    llama_gpu: bool

    @classmethod
    def probe(cls) -> Machine:
        devices = tuple(gpu_devices())
        return cls(devices=devices, llama_gpu=bool(devices) and llama_gpu_build())

    def estimator(self) -> Callable[[ModelSpec], Footprint]:
        """A model's footprint on this machine (RAM, and each GPU it uses)."""
        return lambda spec: place(spec, estimate_bytes(spec), self.devices, llama_gpu=self.llama_gpu)


def policy_for(settings: Settings, machine: Machine | None = None) -> Policy:
    machine = machine if machine is not None else Machine.probe()
    ram = int(settings.memory_budget) if settings.memory_budget is not None else default_budget()
    limits = budgets(ram, machine.devices, settings.gpu_memory_fraction)
    if machine.devices:
        log.info(
            "memory budgets: %d MiB of RAM, %s",
            ram // 1024**2,
            ", ".join(f"GPU {d.index}: {limits[gpu(d.index)] // 1024**2} MiB" for d in machine.devices),
        )
        if not machine.llama_gpu:
            log.info("GPUs found, but this llama.cpp cannot offload to them: llama.cpp models run on the CPU")
    return Policy(
        ttl=settings.ttl,
        budget=limits,
        max_loaded=settings.max_loaded,
        exclusive_groups=frozenset(name for name, group in settings.groups.items() if group.exclusive),
        swap_timeout=settings.swap_timeout,
        swap_wait=settings.swap_wait,
        unload_grace=settings.unload_grace,
        dummy_names=frozenset(settings.dummy_models),
        hang_timeout=settings.engine.hang_timeout,
    )


@dataclass
class Services:
    settings: Settings
    paths: Paths
    registry: ModelRegistry
    manager: ModelManager
    db: Database
    keys: KeyStore
    usage: UsageStore
    recorder: UsageRecorder
    gateway: Gateway
    auth: Authenticator
    presets: SamplerPresets
    generations: Generations = field(default_factory=Generations)  # in progress, for Kobold's abort and check
    started_at: float = field(default_factory=time.time)
    metrics: Metrics = field(default_factory=Metrics)
    gpus: GpuMonitor = field(default_factory=GpuMonitor)
    capabilities: CapabilityBook = field(default_factory=CapabilityBook)  # what each model file can do
    request_feed: RequestFeed = field(default_factory=RequestFeed)  # the request log, live (the console's tail)
    ready: bool = False  # started and not stopping: /ready may say yes
    stopping: bool = False
    # Set when the drain deadline passes: what still runs ends now, with the dialect's "shutting down" error.
    cutoff: asyncio.Event = field(default_factory=asyncio.Event)
    _housekeeping: asyncio.Task[None] | None = None
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.metrics.watch_state(lambda: self.gateway.queue.depth, self._model_gauges, self._gpu_gauges)
        self.manager.on_load = self.metrics.model_loaded

    def _model_gauges(self) -> list[ModelGauge]:
        parallel = {spec.id: spec.parallel for spec in self.registry.specs()}
        return [
            ModelGauge(
                model=s.id,
                loaded=s.state is ModelState.LOADED,
                in_flight=s.in_flight,
                memory_bytes=s.memory,
                slots=parallel.get(s.id, 1),
                placement=s.placement,
            )
            for s in self.manager.statuses()
        ]

    def _gpu_gauges(self) -> list[GpuGauge]:
        return [GpuGauge(g.index, g.used_bytes, g.total_bytes, g.utilization) for g in self.gpus.latest]

    async def prepare_store(self) -> None:
        """The database's one-time start-up work: migrations, and the first admin key when there is none.

        Idempotent (a second run finds both done). With `workers` above 1 the supervisor runs it once before the
        gateway processes start, so they never race to migrate or each create (and print) a first admin key.
        """
        await self.db.migrate()
        if self.settings.auth.enabled:
            given = self.settings.auth.admin_key or _env_secret("SOMNER_ADMIN_KEY")
            await ensure_admin_key(self.keys, self.paths.data_dir, given.get_secret_value() if given else None)

    async def start(self) -> None:
        await self.prepare_store()
        midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        now = time.time()
        for key_id, tokens in (await self.usage.tokens_since(midnight)).items():
            self.gateway.limiter.seed_daily(key_id, tokens, now)
        if self.settings.log_requests or self.settings.strict_privacy:  # (strict stores no text; prunes what was kept)
            self._housekeeping = asyncio.create_task(self._forget_old_texts(), name="usage-retention")
        await self.recorder.start()
        preload = list(self.settings.preload)
        if self.registry.default_id is not None:
            preload.append(self.registry.default_id)
        _settle_garbage_collector()  # (here, not once the server is up: the engines' loads are still under way)
        try:
            await self.manager.start(preload)
        finally:
            await asyncio.to_thread(head_start.discard)  # (an engine started ahead that the manager did not take)
        self.ready = True

    async def _forget_old_texts(self) -> None:
        """Stored prompt and completion text older than log_retention_days goes, at start and daily after."""
        while True:
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.settings.log_retention_days)
            try:
                await self.usage.forget_texts(cutoff)
            except StoreUnavailable as exc:
                log.warning("cannot prune stored request text now: %s", exc)
            await asyncio.sleep(86400)

    def background(self, work: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run `work` beyond the request that started it (a model load its client may leave); stopped with the
        services. Its outcome is the caller's to read; nobody reading it is not an error."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)

        def done(finished: asyncio.Task[T]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.debug("%s ended with %r", name, finished.exception())

        task.add_done_callback(done)
        return task

    def begin_drain(self) -> None:
        """The server stops taking connections: not ready any more (requests in flight go on)."""
        self.ready, self.stopping = False, True
        self.request_feed.close()  # live log tails end now: they must not hold the drain up

    def cut_off(self) -> None:
        """The drain deadline passed: streams and requests still running end now, each with its dialect's
        "shutting down" error (and a usage record for what was generated)."""
        if not self.cutoff.is_set():
            log.warning("drain deadline reached: ending the requests still running")
            self.cutoff.set()

    async def stop(self) -> None:
        self.begin_drain()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.manager.shutdown()
        await asyncio.to_thread(head_start.discard)
        await self.recorder.stop()
        await self.gateway.limiter.close()
        await self.db.close()
        shutil.rmtree(self.paths.run_dir, ignore_errors=True)


def _env_secret(name: str) -> SecretStr | None:
    value = os.environ.get(name)
    return SecretStr(value) if value else None


def database_url(settings: Settings, paths: Paths) -> str:
    if settings.database.url is not None:
        return settings.database.url.get_secret_value()
    return sqlite_url(paths.data_dir / "somner.db")


def make_limiter(settings: Settings) -> Limiter:
    """In memory (one replica), or in Redis when `redis.url` is set (replicas share one limit per key)."""
    redis = settings.redis
    if redis.url is None:
        return RateLimiter()
    return RedisLimiter.from_url(
        redis.url.get_secret_value(),
        prefix=redis.key_prefix,
        on_error=redis.on_error,
        connect_timeout=redis.connect_timeout,
        timeout=redis.timeout,
        lease_ttl=redis.lease_ttl,
    )


def build_services(settings: Settings, factory: BackendFactory | None = None) -> Services:
    """Everything the app needs; raises `SomnerError` or `ModelConfigError` for a configuration that cannot work."""
    paths = make_paths(settings)
    try:
        registry = ModelRegistry(settings, paths.models_dir, paths.templates_dir)
        for name in settings.preload:
            registry.get(name)
    except BaseException:
        shutil.rmtree(paths.run_dir, ignore_errors=True)
        raise
    machine = Machine.probe()
    for spec in registry.specs():
        problem = gpu_problem(spec, machine.devices)
        if problem is not None:
            shutil.rmtree(paths.run_dir, ignore_errors=True)
            raise ModelConfigError(problem)
    manager = ModelManager(
        registry,
        factory or backend_factory(settings, paths),
        policy=policy_for(settings, machine),
        estimate=machine.estimator(),
    )
    db = Database(database_url(settings, paths))
    keys = KeyStore(db)
    usage = UsageStore(db)
    recorder = UsageRecorder(usage, paths.data_dir / "usage-spool.jsonl", settings.database.batch_interval)
    limits = settings.limits
    gateway = Gateway(
        limits,
        make_limiter(settings),
        FairQueue(limits.max_concurrent, limits.max_queue, limits.queue_timeout),
        recorder,
        log_requests=settings.records_prompts,
    )
    presets = SamplerPresets(paths.sampler_presets_dir, sampler_fields)
    if settings.sampler_preset is not None:
        try:
            presets.switch(settings.sampler_preset)
        except SomnerError as exc:
            shutil.rmtree(paths.run_dir, ignore_errors=True)
            raise SomnerError(f"sampler_preset: {exc.message}") from None
    return Services(
        settings=settings,
        paths=paths,
        presets=presets,
        registry=registry,
        manager=manager,
        db=db,
        keys=keys,
        usage=usage,
        recorder=recorder,
        gateway=gateway,
        auth=Authenticator(keys, settings.auth.cache_ttl),
        metrics=Metrics(per_key=settings.metrics_per_key),
    )


def _settle_garbage_collector() -> None:
    """Everything built at start-up lives as long as the server: move it out of the collector's sight, so that
    its full passes (which stop the event loop) walk only what requests allocate, not every module and model. No
    collection first: at this point it finds a handful of unreachable objects and takes 70 ms of a cold start."""
    gc.freeze()
