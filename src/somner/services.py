"""The object graph handed to routes. Built by `build_services`, started and stopped by the app's lifespan.

There are no module-level singletons: tests build their own `Services` (or a whole app) with their settings.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from somner.models.backends.base import Backend
from somner.models.backends.process import ProcessBackend
from somner.models.backends.upstream import UpstreamBackend
from somner.models.backends.worker import WorkerBackend, WorkerPaths
from somner.models.manager import BackendFactory, ModelManager, Policy
from somner.models.memory import default_budget, estimate_bytes
from somner.models.registry import ModelRegistry, ModelSpec
from somner.settings import Settings, resolve_data_dir, resolve_models_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Paths:
    data_dir: Path
    models_dir: Path
    log_dir: Path
    run_dir: Path  # private, short-lived: engine sockets


def make_paths(settings: Settings) -> Paths:
    data_dir = resolve_data_dir(settings)
    models_dir = resolve_models_dir(settings, data_dir)
    for directory in (data_dir, models_dir, data_dir / "logs"):
        directory.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="somner-"))  # mode 0700, and short enough for socket paths
    return Paths(data_dir=data_dir, models_dir=models_dir, log_dir=data_dir / "logs", run_dir=run_dir)


def backend_factory(settings: Settings, paths: Paths) -> BackendFactory:
    counter = itertools.count()
    worker_paths = WorkerPaths(run_dir=paths.run_dir, log_dir=paths.log_dir)

    def make(spec: ModelSpec) -> Backend:
        if spec.kind == "process":
            return ProcessBackend(spec, paths.log_dir, settings.engine)
        if spec.kind == "upstream":
            return UpstreamBackend(spec, settings.engine)
        return WorkerBackend(spec, worker_paths, settings.engine, next(counter))

    return make


def policy_for(settings: Settings) -> Policy:
    return Policy(
        ttl=settings.ttl,
        budget=int(settings.memory_budget) if settings.memory_budget is not None else default_budget(),
        max_loaded=settings.max_loaded,
        exclusive_groups=frozenset(name for name, group in settings.groups.items() if group.exclusive),
        swap_timeout=settings.swap_timeout,
        unload_grace=settings.unload_grace,
        dummy_names=frozenset(settings.dummy_models),
    )


@dataclass
class Services:
    settings: Settings
    paths: Paths
    registry: ModelRegistry
    manager: ModelManager
    started_at: float = field(default_factory=time.time)

    async def start(self) -> None:
        preload = list(self.settings.preload)
        if self.registry.default_id is not None:
            preload.append(self.registry.default_id)
        await self.manager.start(preload)

    async def stop(self) -> None:
        await self.manager.shutdown()
        shutil.rmtree(self.paths.run_dir, ignore_errors=True)


def build_services(settings: Settings, factory: BackendFactory | None = None) -> Services:
    """Everything the app needs; raises `SomnerError` or `ModelConfigError` for a configuration that cannot work."""
    paths = make_paths(settings)
    try:
        registry = ModelRegistry(settings, paths.models_dir)
        for name in settings.preload:
            registry.get(name)
    except BaseException:
        shutil.rmtree(paths.run_dir, ignore_errors=True)
        raise
    manager = ModelManager(
        registry,
        factory or backend_factory(settings, paths),
        policy=policy_for(settings),
        estimate=estimate_bytes,
    )
    return Services(settings=settings, paths=paths, registry=registry, manager=manager)
