"""Typed settings: one model, three layers. YAML file < `SOMNER_*` environment (nested with `__`) < CLI flags.

Configuration is strict: an unknown key anywhere is an error that names the key. Field descriptions are the
documentation: they feed `--help`, `config.example.yaml` (see `somner.config_example`) and the README.
Nothing is read at import time; `load_settings()` builds a `Settings` when asked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from somner.durations import format_duration, parse_duration
from somner.models.names import validate_model_name

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Seconds; accepts `300`, `300s`, `5m`, `1h`."""

ModelName = Annotated[str, BeforeValidator(validate_model_name)]

ENV_PREFIX = "SOMNER_"
PLATFORM_VOLUMES = (Path("/runpod-volume"), Path("/workspace"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineSettings(_Section):
    """Defaults for every model served by Somner's own engine worker; a `models:` entry may override each."""

    ctx: int | None = Field(
        default=None,
        ge=256,
        description=(
            "Context length in tokens that EACH concurrent sequence gets (prompt + output). The KV cache is "
            "sized ctx x parallel, so raising either raises memory use. Default: the model's training "
            "context, capped at 4096."
        ),
    )
    parallel: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Sequences decoded together in one batch (slots); further requests wait in a FIFO queue.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for llama.cpp. Default: the number of CPUs this process may use.",
    )
    batch: int = Field(
        default=512,
        ge=32,
        description="Prompt tokens processed per scheduling step (chunked prefill budget).",
    )
    gpu_layers: int = Field(
        default=-1,
        ge=-1,
        description="Layers offloaded to the GPU when llama.cpp was built with GPU support; -1 means all.",
    )
    cpu_repack: bool = Field(
        default=False,
        description=(
            "Let llama.cpp repack weights for faster CPU matrix kernels. Off by default because results then "
            "depend on batch composition: with it off, identical requests at temperature 0 give identical text "
            "however they are batched."
        ),
    )
    ready_timeout: Duration = Field(
        default=120.0, gt=0, description="How long a starting engine may take to load its model."
    )
    stop_timeout: Duration = Field(
        default=10.0, gt=0, description="Grace period between SIGTERM and SIGKILL when an engine stops."
    )
    read_timeout: Duration = Field(
        default=300.0, gt=0, description="Longest silence tolerated from an engine while it generates."
    )


class ModelEntry(_Section):
    """A model served under `id`. Unset keys fall back to the `engine:` defaults."""

    id: ModelName = Field(description="The model id clients send (letters, digits, '.', '_', '-', ':').")
    path: Path = Field(description="GGUF file to serve (may live outside the models directory).")
    ctx: int | None = Field(default=None, ge=256, description="Per-sequence context; see engine.ctx.")
    parallel: int | None = Field(default=None, ge=1, le=256, description="Slots; see engine.parallel.")
    threads: int | None = Field(default=None, ge=1, description="CPU threads; see engine.threads.")
    batch: int | None = Field(default=None, ge=32, description="Prefill chunk; see engine.batch.")
    gpu_layers: int | None = Field(default=None, ge=-1, description="GPU layers; see engine.gpu_layers.")
    template: str | None = Field(
        default=None,
        description=(
            "Chat template: a built-in name (gemma, llama3, chatml, mistral, phi3) or a path to a Jinja file. "
            "Overrides the template stored in the GGUF."
        ),
    )

    @field_validator("template")
    @classmethod
    def _template_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("template must be a built-in name or a file path")
        return value


class Settings(BaseSettings):
    """Everything `somner serve` reads."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    host: str = Field(
        default="127.0.0.1",
        description="Address to listen on. Loopback by default: nothing else can connect.",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    data_dir: Path | None = Field(
        default=None,
        description=(
            "Where Somner keeps models, logs and its database. Default: SOMNER_DATA_DIR, else a mounted "
            "platform volume (/runpod-volume, then /workspace) + '/somner', else $XDG_DATA_HOME/somner "
            "(~/.local/share/somner)."
        ),
    )
    models_dir: Path | None = Field(
        default=None,
        description="Directory scanned for *.gguf files, each served under its file stem. Default: <data_dir>/models.",
    )
    model: str | None = Field(
        default=None,
        description="A model id or a path to a GGUF file to serve and load at start.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log verbosity.")
    max_request_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above it)."
    )
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Engine defaults.")
    models: list[ModelEntry] = Field(default_factory=list, description="Models served from explicit paths.")

    @field_validator("models")
    @classmethod
    def _unique_ids(cls, entries: list[ModelEntry]) -> list[ModelEntry]:
        seen: set[str] = set()
        for entry in entries:
            if entry.id in seen:
                raise ValueError(f"model id {entry.id!r} appears twice")
            seen.add(entry.id)
        return entries

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges file, environment and flags itself, so the model only validates what it gets.
        return (init_settings,)


class ConfigFileError(ValueError):
    """The YAML file cannot be read or is not a mapping."""


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return data


class _EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of `os.environ`."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, False, self.env_ignore_empty, self.env_parse_none_str)


def environment_layer(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `SOMNER_*` variables as nested settings data, decoded by pydantic-settings."""
    return dict(_EnvironmentSource(os.environ if environ is None else environ)())


def unknown_environment_keys(environ: Mapping[str, str]) -> list[str]:
    """`SOMNER_*` variables that name no setting (pydantic-settings would silently ignore them)."""
    known = {name.upper() for name in Settings.model_fields}
    extra = {"ADMIN_KEY"}  # read directly by the key store, not a setting
    unknown = []
    for key in environ:
        if key.startswith(ENV_PREFIX):
            head = key[len(ENV_PREFIX) :].split("__", 1)[0]
            if head not in known and head not in extra:
                unknown.append(key)
    return sorted(unknown)


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings. Raises `ConfigFileError` or pydantic's `ValidationError`."""
    data: dict[str, Any] = read_config_file(config_file) if config_file is not None else {}
    data = deep_merge(data, environment_layer(environ))
    data = deep_merge(data, {k: v for k, v in (cli or {}).items() if v is not None})
    return Settings(**data)


def _mount_points() -> set[Path]:
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return set()
    return {Path(line.split()[1]) for line in lines if len(line.split()) > 1}


def resolve_data_dir(
    settings: Settings,
    *,
    is_mounted: Callable[[Path], bool] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The data directory: explicit setting, else a mounted platform volume, else the XDG data home."""
    if settings.data_dir is not None:
        return settings.data_dir.expanduser()
    env = os.environ if environ is None else environ
    if is_mounted is None:
        mounts = _mount_points()

        def is_mounted(path: Path) -> bool:
            return path in mounts or os.path.ismount(path)

    for volume in PLATFORM_VOLUMES:
        if is_mounted(volume):
            return volume / "somner"
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME", str(Path.home()))) / ".local" / "share"
    return base / "somner"


def resolve_models_dir(settings: Settings, data_dir: Path) -> Path:
    return settings.models_dir.expanduser() if settings.models_dir is not None else data_dir / "models"
