"""The model registry: which model ids exist and what serves each.

Sources, later ones winning on the same id: every `*.gguf` directly in the models directory (id = file stem),
the config file's `models:` entries, and `--model PATH`. Directory entries must resolve inside the models
directory; names from requests are only ever looked up here, never turned into paths.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from somner.errors import ModelNotFound
from somner.models.names import is_valid_model_name
from somner.settings import EngineSettings, ModelEntry, Settings

log = logging.getLogger(__name__)

Source = Literal["directory", "config", "cli"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to start an engine for one model."""

    id: str
    path: Path
    source: Source
    ctx: int | None
    parallel: int
    threads: int | None
    batch: int
    gpu_layers: int
    cpu_repack: bool
    template: str | None = None

    @classmethod
    def build(
        cls,
        model_id: str,
        path: Path,
        source: Source,
        engine: EngineSettings,
        entry: ModelEntry | None = None,
    ) -> ModelSpec:
        e = entry
        return cls(
            id=model_id,
            path=path,
            source=source,
            ctx=_first(e.ctx if e else None, engine.ctx),
            parallel=_first(e.parallel if e else None, engine.parallel),
            threads=_first(e.threads if e else None, engine.threads),
            batch=_first(e.batch if e else None, engine.batch),
            gpu_layers=_first(e.gpu_layers if e else None, engine.gpu_layers),
            cpu_repack=engine.cpu_repack,
            template=e.template if e else None,
        )


def _first(value: T | None, default: T) -> T:
    return default if value is None else value


def scan_models_dir(models_dir: Path, engine: EngineSettings) -> dict[str, ModelSpec]:
    """Every usable `*.gguf` directly inside `models_dir`, keyed by file stem."""
    found: dict[str, ModelSpec] = {}
    if not models_dir.is_dir():
        return found
    root = models_dir.resolve()
    for path in sorted(models_dir.glob("*.gguf")):
        if path.name.startswith("."):
            continue  # temporary files of an assembly or a pull in progress
        resolved = path.resolve()
        if not resolved.is_relative_to(root) or not resolved.is_file():
            log.warning("skipping %s: it resolves outside the models directory", path.name)
            continue
        if not is_valid_model_name(path.stem):
            log.warning("skipping %s: its name is not a valid model id", path.name)
            continue
        found[path.stem] = ModelSpec.build(path.stem, resolved, "directory", engine)
    return found


class ModelRegistry:
    """Known models. Re-scans the models directory when asked for an id it does not know."""

    def __init__(self, settings: Settings, models_dir: Path) -> None:
        self._settings = settings
        self._models_dir = models_dir
        self._lock = threading.Lock()
        self._configured: dict[str, ModelSpec] = {}
        for entry in settings.models:
            path = entry.path.expanduser()
            self._configured[entry.id] = ModelSpec.build(entry.id, path, "config", settings.engine, entry)
        self.default_id: str | None = None
        if settings.model is not None:
            self.default_id = self._add_cli_model(settings.model)
        self._specs: dict[str, ModelSpec] = {}
        self.refresh()

    @property
    def models_dir(self) -> Path:
        return self._models_dir

    def _add_cli_model(self, value: str) -> str:
        candidate = Path(value).expanduser()
        if is_valid_model_name(value) and not candidate.is_file():
            return value  # an id, checked once the directory has been scanned
        if not candidate.is_file():
            raise ModelNotFound(f"--model {value!r} is neither a known model id nor a GGUF file")
        model_id = candidate.stem
        if not is_valid_model_name(model_id):
            raise ModelNotFound(f"the file name of {value!r} cannot serve as a model id")
        self._configured.setdefault(
            model_id, ModelSpec.build(model_id, candidate.resolve(), "cli", self._settings.engine)
        )
        return model_id

    def refresh(self) -> None:
        specs = scan_models_dir(self._models_dir, self._settings.engine)
        specs.update(self._configured)
        with self._lock:
            self._specs = specs
        if self.default_id is not None and self.default_id not in specs:
            raise ModelNotFound(f"--model {self.default_id!r} is not a known model; known: {', '.join(specs)}")

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._specs)

    def specs(self) -> list[ModelSpec]:
        with self._lock:
            return [self._specs[key] for key in sorted(self._specs)]

    def find(self, model_id: str) -> ModelSpec | None:
        with self._lock:
            spec = self._specs.get(model_id)
        if spec is None and is_valid_model_name(model_id):
            self.refresh()
            with self._lock:
                spec = self._specs.get(model_id)
        return spec

    def get(self, model_id: str) -> ModelSpec:
        spec = self.find(model_id)
        if spec is None:
            known = self.ids()
            listing = ", ".join(known) if known else "none"
            raise ModelNotFound(f"The model '{model_id}' does not exist. Available models: {listing}", param="model")
        return spec
