"""The model registry: which model names exist and how each model is served.

Sources, merged per model id in this order (later wins, key by key): every `*.gguf` directly in the models
directory (id = file stem, worker backend), the config file's `models:` entry, and the model's own file
`<models_dir>/<id>.yaml`; plus `--model PATH`. Directory entries must resolve inside the models directory.
Names from requests are only ever looked up here (ids and aliases), never turned into paths.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from somner.errors import AmbiguousModelName, BadRequest, ModelNotFound
from somner.models.names import is_valid_model_name
from somner.settings import EngineSettings, ModelEntry, Settings, deep_merge
from somner.settings.models import BackendKind, entry_data

log = logging.getLogger(__name__)

Source = Literal["directory", "config", "file", "cli"]


class ModelConfigError(ValueError):
    """A per-model file is invalid; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model's merged configuration, with engine defaults resolved."""

    entry: ModelEntry
    engine: EngineSettings
    source: Source

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def kind(self) -> BackendKind:
        return self.entry.kind

    @property
    def path(self) -> Path | None:
        return self.entry.path

    @property
    def names(self) -> tuple[str, ...]:
        return (self.entry.id, *self.entry.aliases)

    @property
    def ctx(self) -> int | None:
        return self.entry.ctx if self.entry.ctx is not None else self.engine.ctx

    @property
    def parallel(self) -> int:
        return self.entry.parallel if self.entry.parallel is not None else self.engine.parallel

    @property
    def threads(self) -> int | None:
        return self.entry.threads if self.entry.threads is not None else self.engine.threads

    @property
    def batch(self) -> int:
        return self.entry.batch if self.entry.batch is not None else self.engine.batch

    @property
    def gpu_layers(self) -> int:
        return self.entry.gpu_layers if self.entry.gpu_layers is not None else self.engine.gpu_layers

    @property
    def split_mode(self) -> str:
        return self.entry.split_mode or self.engine.split_mode

    @property
    def main_gpu(self) -> int:
        return self.entry.main_gpu if self.entry.main_gpu is not None else self.engine.main_gpu

    @property
    def tensor_split(self) -> list[float]:
        split = self.entry.tensor_split if self.entry.tensor_split is not None else self.engine.tensor_split
        return list(split or [])

    @property
    def flash_attn(self) -> str:
        return self.entry.flash_attn or self.engine.flash_attn

    @property
    def cache_types(self) -> tuple[str, str]:
        """The keys' and the values' KV cache precision."""
        both = self.entry.cache_type or "f16"
        return self.entry.cache_type_k or both, self.entry.cache_type_v or both

    def conflict(self) -> str | None:
        """What makes this model's engine settings impossible together, if anything."""
        value_type = self.cache_types[1]
        if value_type != "f16" and self.flash_attn == "off" and self.kind == "worker":
            return f"model {self.id!r}: a quantized value cache (cache_type_v {value_type}) needs flash_attn auto or on"
        return None

    @property
    def ready_timeout(self) -> float:
        return self.entry.ready_timeout if self.entry.ready_timeout is not None else self.engine.ready_timeout


def _read_model_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelConfigError(f"{path.name}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path.name} must hold a mapping of model settings")
    if "id" in data and data["id"] != path.stem:
        raise ModelConfigError(f"{path.name} sets id {data['id']!r}; the file name fixes it as {path.stem!r}")
    return data


def _scan(models_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(GGUF files, per-model YAML files) directly inside the models directory, by model id."""
    ggufs: dict[str, dict[str, Any]] = {}
    files: dict[str, dict[str, Any]] = {}
    if not models_dir.is_dir():
        return ggufs, files
    root = models_dir.resolve()
    for path in sorted(models_dir.iterdir()):
        if path.name.startswith(".") or path.suffix not in (".gguf", ".yaml"):
            continue  # hidden files are downloads or assemblies in progress
        if not is_valid_model_name(path.stem):
            log.warning("skipping %s: its name is not a valid model id", path.name)
            continue
        resolved = path.resolve()
        if not resolved.is_relative_to(root) or not resolved.is_file():
            log.warning("skipping %s: it resolves outside the models directory", path.name)
            continue
        if path.suffix == ".gguf":
            ggufs[path.stem] = {"id": path.stem, "path": resolved}
        else:
            files[path.stem] = _read_model_file(path)
    return ggufs, files


LATEST_TAG = ":latest"


class ModelRegistry:
    """Known models by name. Re-reads the models directory when asked for a name it does not know."""

    def __init__(self, settings: Settings, models_dir: Path, templates_dir: Path | None = None) -> None:
        self._settings = settings
        self._models_dir = models_dir
        self.templates_dir = templates_dir  # Jinja files a model's `template` may name
        self._runtime: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._configured: dict[str, dict[str, Any]] = {
            entry.id: entry.model_dump(exclude_unset=True) for entry in settings.models
        }
        self.default_id: str | None = None
        self._cli: dict[str, Any] | None = None
        if settings.model is not None:
            self.default_id = self._cli_model(settings.model)
        self._specs: dict[str, ModelSpec] = {}
        self._names: dict[str, str] = {}
        self.refresh(strict=True)

    @property
    def models_dir(self) -> Path:
        return self._models_dir

    def _cli_model(self, value: str) -> str:
        candidate = Path(value).expanduser()
        if is_valid_model_name(value) and not candidate.is_file():
            return value  # an id, checked once the directory has been read
        if not candidate.is_file():
            raise ModelNotFound(f"--model {value!r} is neither a known model id nor a GGUF file")
        if not is_valid_model_name(candidate.stem):
            raise ModelNotFound(f"the file name of {value!r} cannot serve as a model id")
        self._cli = {"id": candidate.stem, "path": candidate.resolve()}
        return candidate.stem

    def refresh(self, *, strict: bool = False) -> None:
        """Re-read the models directory. With `strict`, a bad per-model file is an error; otherwise it is
        logged and that file ignored (a server keeps running when someone saves a typo)."""
        ggufs, files = _scan(self._models_dir)
        specs: dict[str, ModelSpec] = {}
        ids = [*ggufs, *(k for k in self._configured if k not in ggufs)]
        ids += [k for k in files if k not in ggufs and k not in self._configured]
        if self._cli is not None and self._cli["id"] not in ids:
            ids.append(self._cli["id"])
        for model_id in ids:
            entry, source, problem = self._entry(model_id, ggufs, files)
            if entry is None:
                if strict:
                    raise ModelConfigError(problem)
                log.warning("ignoring %s", problem)
                continue
            specs[model_id] = ModelSpec(entry=entry, engine=self._settings.engine, source=source)
        names = self._index(specs, strict)
        with self._lock:
            self._specs, self._names = specs, names
        if self.default_id is not None and self.default_id not in names:
            raise ModelNotFound(f"--model {self.default_id!r} is not a known model; known: {', '.join(specs)}")

    def _entry(
        self, model_id: str, ggufs: dict[str, dict[str, Any]], files: dict[str, dict[str, Any]]
    ) -> tuple[ModelEntry | None, Source, str]:
        """The model's entry merged from every source (runtime settings last), or None and why not."""
        data: dict[str, Any] = {}
        source: Source = "directory"
        for layer, name in (
            (ggufs.get(model_id), "directory"),
            (self._cli if self._cli is not None and self._cli["id"] == model_id else None, "cli"),
            (self._configured.get(model_id), "config"),
            (files.get(model_id), "file"),
        ):
            if layer is not None:
                data = deep_merge(data, layer)
                source = name  # type: ignore[assignment]
        runtime = self._runtime.get(model_id)
        if runtime is not None:
            data = {**data, **runtime}  # (whole values: a runtime `loras` list replaces the configured one)
        try:
            entry = ModelEntry.model_validate(entry_data(data, model_id))
            problem = entry.missing()
        except ValidationError as exc:
            problem = f"model {model_id!r}: {exc.errors(include_url=False)[0]['msg']}"
        if problem is None:
            problem = ModelSpec(entry=entry, engine=self._settings.engine, source=source).conflict()
        if problem is not None:
            return None, source, problem
        return self._with_template_file(entry), source, ""

    def _with_template_file(self, entry: ModelEntry) -> ModelEntry:
        """A `template` that names a Jinja file of the templates directory (`NAME` for `NAME.jinja`) becomes its
        path; anything else (a built-in name, a path) is left for the engine."""
        name = entry.template
        if self.templates_dir is None or name is None or not is_valid_model_name(name):
            return entry
        path = self.templates_dir / f"{name}.jinja"
        return entry.model_copy(update={"template": str(path)}) if path.is_file() else entry

    def runtime_settings(self, model_id: str) -> dict[str, Any]:
        """The settings set at run time for `model_id` (empty when none)."""
        with self._lock:
            return dict(self._runtime.get(model_id, {}))

    def set_runtime(self, model_id: str, values: dict[str, Any] | None) -> ModelSpec:
        """Settings for `model_id` that hold until the server stops, over every other source (what TabbyAPI's
        load, template and LoRA calls change); None forgets them. They take effect at the model's next load.
        BadRequest (nothing changed) when the model's entry would not be valid with them."""
        with self._lock:
            previous = self._runtime.get(model_id)
            if values:
                self._runtime[model_id] = dict(values)
            else:
                self._runtime.pop(model_id, None)
        ggufs, files = _scan(self._models_dir)
        entry, _, problem = self._entry(model_id, ggufs, files)
        if entry is None:
            with self._lock:
                if previous is None:
                    self._runtime.pop(model_id, None)
                else:
                    self._runtime[model_id] = previous
            raise BadRequest(problem.replace(f"model {model_id!r}: ", ""))
        self.refresh()
        return self.get(model_id)

    def _index(self, specs: dict[str, ModelSpec], strict: bool) -> dict[str, str]:
        names: dict[str, str] = {}
        for spec in specs.values():
            for name in spec.names:
                if name in names and names[name] != spec.id:
                    message = f"the name {name!r} is used by both {names[name]!r} and {spec.id!r}"
                    if strict:
                        raise ModelConfigError(message)
                    log.warning("%s; keeping the first", message)
                    continue
                names[name] = spec.id
        return names

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._specs)

    def specs(self) -> list[ModelSpec]:
        with self._lock:
            return [self._specs[key] for key in sorted(self._specs)]

    def registered_name(self, name: str) -> str | None:
        """The id or alias, exactly as registered, that a client's `name` refers to: the name itself; else the name
        with Ollama's `:latest` tag dropped (or added: a bare name means `name:latest`); else any of those in
        another letter case. None when nothing matches (after re-reading the models directory);
        `AmbiguousModelName` (400) when letter case alone leaves several models."""
        found = self._match(name)
        if found is None and is_valid_model_name(name):
            self.refresh()
            found = self._match(name)
        return found

    def _match(self, name: str) -> str | None:
        forms = [name]
        if name.casefold().endswith(LATEST_TAG):
            forms.append(name[: -len(LATEST_TAG)])
        elif ":" not in name:
            forms.append(name + LATEST_TAG)
        with self._lock:
            names = self._names
        for form in forms:
            if form in names:
                return form
        folded = {form.casefold() for form in forms}
        matches = sorted(known for known in names if known.casefold() in folded)
        models = sorted({names[known] for known in matches})
        if len(models) > 1:
            raise AmbiguousModelName(
                f"The model name '{name}' is ambiguous: it could be {', '.join(repr(m) for m in models)}. "
                "Use one of those names exactly.",
                param="model",
            )
        return matches[0] if matches else None

    def find(self, name: str) -> ModelSpec | None:
        """The model a client's `name` refers to (see `registered_name`), or None."""
        known = self.registered_name(name)
        if known is None:
            return None
        with self._lock:
            model_id = self._names.get(known)
            return self._specs.get(model_id) if model_id is not None else None

    def get(self, name: str) -> ModelSpec:
        spec = self.find(name)
        if spec is None:
            known = self.ids()
            listing = ", ".join(known) if known else "none"
            raise ModelNotFound(f"The model '{name}' does not exist. Available models: {listing}", param="model")
        return spec
