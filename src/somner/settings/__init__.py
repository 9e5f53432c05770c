"""Typed settings: one model, three layers. YAML file < `SOMNER_*` environment (nested with `__`) < CLI flags.

Configuration is strict: an unknown key anywhere is an error that names the key. Field descriptions are the
documentation: they feed `--help`, `config.example.yaml` (see `somner.config_example`) and the README.
Nothing is read at import time; `load_settings()` builds a `Settings` when asked. Sections live in submodules:
`engine` (worker defaults), `models` (model entries), `types` (durations, names).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ByteSize, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from somner.settings.engine import EngineSettings
from somner.settings.gateway import AuthSettings, DatabaseSettings, LimitSettings, RedisSettings
from somner.settings.models import Group, ModelEntry
from somner.settings.types import Duration, ModelName, Section

__all__ = [
    "AuthSettings",
    "ConfigFileError",
    "DatabaseSettings",
    "Duration",
    "EngineSettings",
    "Group",
    "LimitSettings",
    "ModelEntry",
    "ModelName",
    "RedisSettings",
    "Section",
    "Settings",
    "deep_merge",
    "load_settings",
    "resolve_data_dir",
    "resolve_dir",
    "resolve_models_dir",
]

ENV_PREFIX = "SOMNER_"
PLATFORM_VOLUMES = (Path("/runpod-volume"), Path("/workspace"))
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Whether `host` (an address to listen on, or a Host header's name) reaches this machine only."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


ApiServer = Literal["openai", "ollama", "kobold", "anthropic", "tabby"]
API_SERVERS: tuple[ApiServer, ...] = ("openai", "ollama", "kobold", "anthropic", "tabby")


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
    templates_dir: Path | None = Field(
        default=None,
        description=(
            "Chat templates (NAME.jinja) that a model's `template` (and TabbyAPI's template switch) may name. "
            "Default: <data_dir>/templates."
        ),
    )
    loras_dir: Path | None = Field(
        default=None,
        description="LoRA adapters (*.gguf) that TabbyAPI's LoRA calls may load by name. Default: <data_dir>/loras.",
    )
    sampler_presets_dir: Path | None = Field(
        default=None,
        description=(
            "Sampler override presets (NAME.yml: per parameter, `override` and `force`), as TabbyAPI's "
            "sampler_overrides folder. Default: <data_dir>/sampler_overrides."
        ),
    )
    sampler_preset: str | None = Field(
        default=None,
        description=(
            "The sampler override preset applied to every request from start (a name from sampler_presets_dir); "
            "switched at run time through TabbyAPI's /v1/sampling/override/switch."
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log verbosity.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text, or as JSON objects (one per line) for log shippers."
    )
    log_max_bytes: ByteSize = Field(
        default=ByteSize(20 * 1024**2),
        description="Size at which a log file under <data_dir>/logs is rotated (a new, time-stamped file begins).",
    )
    log_keep: int = Field(default=10, ge=1, description="Log files kept per kind (server, each model's engine).")
    health_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "A second port serving only /ping, /health and /ready, without a key and without touching engines, "
            "so a platform's health checks never keep a scale-to-zero machine awake."
        ),
    )
    ready_requires_model: bool = Field(
        default=False, description="/ready answers 503 until at least one model is loaded."
    )
    stall_timeout: Duration = Field(
        default=300.0,
        gt=0,
        description="/ready answers 503 while a model with requests in flight has produced nothing for this long.",
    )
    stream_keepalive: Duration = Field(
        default=15.0,
        ge=0,
        description=(
            "Streams (SSE: OpenAI, Anthropic, Kobold) send a keep-alive comment after this long without an event, "
            "so proxies do not cut a stream whose engine is slow or being replaced. 0: never. (Ollama's NDJSON "
            "streams cannot carry one.)"
        ),
    )
    metrics_public: bool = Field(default=False, description="Serve /metrics without a key.")
    metrics_per_key: bool = Field(
        default=False,
        description="Label request metrics with the key's id (off: label sets stay bounded, no key or user ids).",
    )
    drain_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description=(
            "On stop (SIGTERM, `somner stop`), how long requests in flight may take to finish. Those still running "
            "then end with their dialect's 'shutting down' error (streams: an error event) and a usage record."
        ),
    )
    workers: int = Field(
        default=1,
        ge=1,
        description=(
            "Gateway processes sharing the port (the kernel spreads connections over them), for more throughput "
            "on a machine with more cores. Above 1, `redis.url` is required when auth is on (limits are shared "
            "through Redis), and each process starts its own engines for local models."
        ),
    )
    api_servers: list[ApiServer] = Field(
        default_factory=lambda: list(API_SERVERS),
        description=(
            "API dialects served on the port: openai (/v1/...), ollama (/api/...), kobold (/api/v1, /api/extra), "
            "anthropic (/v1/messages), tabby (TabbyAPI's /v1/model, /v1/lora, /v1/template, /v1/sampling, "
            "/v1/token routes). All by default."
        ),
    )
    max_request_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted, before and after gzip/deflate decoding (413 above it).",
    )
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Engine defaults.")
    models: list[ModelEntry] = Field(
        default_factory=list,
        description="Models beyond the *.gguf files of the models directory, or settings for those.",
    )
    # -- the model manager --
    ttl: Duration = Field(
        default=300.0,
        description=(
            "Unload a model after this long without requests (counted from the end of the last one; a request's "
            "keep_alive overrides it; negative: never)."
        ),
    )
    preload: list[ModelName] = Field(default_factory=list, description="Models loaded at start.")
    max_loaded: int | None = Field(default=None, ge=1, description="Most models resident at once (default: no limit).")
    memory_budget: ByteSize | None = Field(
        default=None,
        description=(
            "RAM all loaded models may use together, e.g. '12GiB' (default: 80% of this machine's memory). "
            "GPU memory has a budget per GPU (gpu_memory_fraction). Least recently used idle models are unloaded "
            "to make room in whichever is short."
        ),
    )
    gpu_memory_fraction: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description=(
            "Share of each NVIDIA GPU's memory that loaded models may use together (their weights and KV cache on "
            "it, and each engine's buffers there), checked before a load."
        ),
    )
    groups: dict[str, Group] = Field(default_factory=dict, description="Swap groups, by name (see models' `group`).")
    dummy_models: list[ModelName] = Field(
        default_factory=list,
        description=(
            "Names that answer with a real model, for clients that insist on one (e.g. gpt-4o): the most recently "
            "used loaded model, else the --model one, else the first known model."
        ),
    )
    swap_timeout: Duration = Field(
        default=120.0, gt=0, description="How long a request waits for room to load its model before a 503."
    )
    unload_grace: Duration = Field(
        default=60.0, gt=0, description="How long an unload waits for requests in flight to finish."
    )
    swap_wait: Duration = Field(
        default=0.0,
        ge=0,
        description=(
            "Swap-aware scheduling: how long requests for a model that needs another one unloaded wait while that "
            "one is still serving requests (new ones included), so that each load serves a batch (0: off, a busy "
            "model is made to go at once). Bounds the wait; the swap itself (drain, load) comes on top."
        ),
    )
    # -- the gateway --
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API keys and browser access.")
    limits: LimitSettings = Field(default_factory=LimitSettings, description="Concurrency, queue and size limits.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="Users, keys and usage records.")
    redis: RedisSettings = Field(
        default_factory=RedisSettings, description="Counters shared by replicas: rate limits, quotas, concurrency."
    )
    log_requests: bool = Field(
        default=False, description="Store prompt and completion text with usage records (off: no text is kept)."
    )
    log_retention_days: int = Field(default=30, ge=1, description="Days stored prompt and completion text is kept.")
    privacy: Literal["standard", "strict"] = Field(
        default="standard",
        description=(
            "strict: no per-request log lines (nor the console's live request feed), no prompt or completion text "
            "(log_requests is ignored), and no tracebacks in log files (the exception's type only); usage rows "
            "keep counts, statuses and latencies. Client addresses and user agents are never recorded."
        ),
    )
    max_pull_bytes: ByteSize = Field(
        default=ByteSize(256 * 1024**3), description="Largest model file `somner models pull` will download."
    )

    @property
    def strict_privacy(self) -> bool:
        return self.privacy == "strict"

    @property
    def records_prompts(self) -> bool:
        """Whether prompt and completion text is stored with usage records (log_requests, unless strict)."""
        return self.log_requests and not self.strict_privacy

    @field_validator("models")
    @classmethod
    def _unique_names(cls, entries: list[ModelEntry]) -> list[ModelEntry]:
        seen: set[str] = set()
        for entry in entries:
            for name in (entry.id, *entry.aliases):
                if name in seen:
                    raise ValueError(f"model name {name!r} appears twice")
                seen.add(name)
        return entries

    @model_validator(mode="after")
    def _groups_exist(self) -> Settings:
        for entry in self.models:
            if entry.group is not None and entry.group not in self.groups:
                raise ValueError(f"model {entry.id!r} names group {entry.group!r}, which `groups:` does not define")
        return self

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
    extra = {"ADMIN_KEY", "API_KEY"}  # auth.admin_key's container convention; the key client commands send
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


def resolve_dir(configured: Path | None, data_dir: Path, default: str) -> Path:
    """A folder setting: as configured, else `<data_dir>/<default>`."""
    return configured.expanduser() if configured is not None else data_dir / default
