"""`models:` entries: one model each, with its backend, tuning, lifecycle and request defaults.

An entry can also live in its own file, `<models_dir>/<id>.yaml` (the same keys, `id` optional), which is merged
over the entry of the same id in the main configuration: one place to tune one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ByteSize, Field, SecretStr, field_validator

from somner.settings.engine import check_tensor_split
from somner.settings.types import Duration, ModelName, Section

MemberKind = Literal["worker", "process", "upstream"]
BackendKind = Literal["worker", "process", "upstream", "pool", "exllamav3"]


_CACHE_TYPES = {"f16": "f16", "fp16": "f16", "q8_0": "q8_0", "q8": "q8_0", "q4_0": "q4_0", "q4": "q4_0", "q6": "q6"}


def _cache_type(value: object) -> object:
    if isinstance(value, str) and value.lower() in _CACHE_TYPES:
        return _CACHE_TYPES[value.lower()]
    return value


# q6 (TabbyAPI's Q6) exists only in ExLlamaV3's cache; `ModelEntry.missing` refuses it for llama.cpp.
CacheType = Annotated[Literal["f16", "q8_0", "q6", "q4_0"], BeforeValidator(_cache_type)]


class Lora(Section):
    path: Path = Field(description="LoRA adapter (GGUF).")
    scale: float = Field(default=1.0, description="Strength of the adapter.")


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url.rstrip("/")


class PoolMember(Section):
    """One engine of a pool: a worker (`path`), a process (`command`) or an upstream (`url`). Keys left out
    are taken from the model entry (its tuning, `env`, `api_key`, `upstream_model`...)."""

    backend: MemberKind | None = Field(
        default=None, description="worker, process or upstream. Default: inferred from `path`, `command` or `url`."
    )
    name: str | None = Field(default=None, description="Label in /admin/backends and logs (default: url or kind#n).")
    weight: float = Field(default=1.0, gt=0, description="Share of traffic relative to the other members.")
    path: Path | None = Field(default=None, description="GGUF file (worker member).")
    command: list[str] | str | None = Field(default=None, description="Engine command line (process member).")
    health_url: str | None = Field(default=None, description="Readiness URL of a process member ({port}).")
    url: str | None = Field(default=None, description="Base URL of a remote OpenAI-compatible server.")
    api_key: SecretStr | None = Field(default=None, description="Bearer token for this upstream member.")
    upstream_model: str | None = Field(default=None, description="The model name on this member's server.")
    connect_timeout: Duration | None = Field(default=None, gt=0, description="Overrides pool.connect_timeout.")
    first_token_timeout: Duration | None = Field(default=None, gt=0, description="Overrides pool.first_token_timeout.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else _http_url(url)

    @property
    def kind(self) -> MemberKind:
        if self.backend is not None:
            return self.backend
        if self.url is not None:
            return "upstream"
        if self.command:
            return "process"
        return "worker"


class PoolSettings(Section):
    """How a pool (a model with `backends:`) balances, checks and ejects its members."""

    check_interval: Duration = Field(default=5.0, gt=0, description="Time between active health checks.")
    check_timeout: Duration = Field(default=2.0, gt=0, description="A health check slower than this fails.")
    healthy_threshold: int = Field(
        default=2, ge=1, description="Consecutive passed checks that bring a down member back."
    )
    unhealthy_threshold: int = Field(default=2, ge=1, description="Consecutive failed checks that take a member down.")
    eject_after: int = Field(
        default=3, ge=1, description="Consecutive failed requests that eject a member (passive health checking)."
    )
    eject_cooldown: Duration = Field(
        default=10.0, gt=0, description="First ejection's length; it doubles with each ejection in a row."
    )
    max_eject_cooldown: Duration = Field(default=300.0, gt=0, description="Longest ejection.")
    connect_timeout: Duration = Field(
        default=10.0, gt=0, description="A member that has not accepted a request within this is failed over."
    )
    first_token_timeout: Duration = Field(
        default=120.0, gt=0, description="A member whose first token takes longer than this is failed over."
    )


class ModelDefaults(Section):
    """Request values used when a request leaves them out (in every API dialect)."""

    system: str | None = Field(
        default=None,
        description=(
            "System prompt added when a chat has none. {now} and {date} are replaced by the current time "
            "(ISO 8601) and date when the request arrives."
        ),
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Nucleus sampling.")
    top_k: int | None = Field(default=None, ge=0, description="Top-k sampling (0: off).")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Min-p sampling.")
    typical_p: float | None = Field(default=None, gt=0.0, le=1.0, description="Typical sampling.")
    repeat_penalty: float | None = Field(default=None, gt=0.0, description="Repetition penalty.")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="Presence penalty.")
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="Frequency penalty.")
    max_tokens: int | None = Field(default=None, ge=1, description="Output limit.")
    stop: list[str] | None = Field(default=None, description="Stop strings.")


class ModelEntry(Section):
    """A model served under `id`. Unset keys fall back to the `engine:` and top-level defaults."""

    id: ModelName = Field(description="The model id clients send (letters, digits, '.', '_', '-', ':').")
    backend: BackendKind | None = Field(
        default=None,
        description=(
            "worker (Somner's engine, for a GGUF `path`), process (any engine started from `command`), or "
            "upstream (a remote OpenAI-compatible server at `urls`), or pool (several engines, `backends`), or "
            "exllamav3 (Somner's ExLlamaV3 engine for an EXL3 model folder `path`; needs somner[exl3] and a CUDA "
            "GPU). Default: inferred from the keys given."
        ),
    )
    path: Path | None = Field(
        default=None,
        description="GGUF file, or an EXL3 model folder for the exllamav3 backend (may live outside the models "
        "directory).",
    )
    aliases: list[ModelName] = Field(default_factory=list, description="Other names that reach this model.")
    # -- engine tuning (worker backend) --
    ctx: int | None = Field(default=None, ge=256, description="Per-sequence context; see engine.ctx.")
    parallel: int | None = Field(default=None, ge=1, le=256, description="Slots; see engine.parallel.")
    threads: int | None = Field(default=None, ge=1, description="CPU threads; see engine.threads.")
    batch: int | None = Field(default=None, ge=32, description="Prefill chunk; see engine.batch.")
    gpu_layers: int | None = Field(default=None, ge=-1, description="GPU layers; see engine.gpu_layers.")
    cache_type: CacheType | None = Field(
        default=None,
        description="KV cache precision: f16, q8_0 or q4_0 (TabbyAPI's FP16/Q8/Q4 accepted); exllamav3 also q6 (Q6).",
    )
    cache_type_k: CacheType | None = Field(default=None, description="The keys' cache precision (over cache_type).")
    cache_type_v: CacheType | None = Field(
        default=None, description="The values' cache precision (over cache_type); a quantized one needs flash_attn."
    )
    split_mode: Literal["none", "layer", "row"] | None = Field(default=None, description="See engine.split_mode.")
    main_gpu: int | None = Field(default=None, ge=0, le=63, description="See engine.main_gpu.")
    flash_attn: Literal["auto", "on", "off"] | None = Field(default=None, description="See engine.flash_attn.")
    rope_scale: float | None = Field(default=None, gt=0, description="RoPE frequency scale (context extension).")
    rope_base: float | None = Field(default=None, gt=0, description="RoPE frequency base.")
    tensor_split: list[float] | None = Field(
        default=None, description="Share of the model per GPU (over engine.tensor_split)."
    )
    loras: list[Lora] = Field(default_factory=list, description="LoRA adapters applied to every request.")
    draft_model: Path | None = Field(
        default=None,
        description=(
            "Speculative decoding: a small GGUF with the same vocabulary that guesses tokens for this model to "
            "check in batches (worker backend; output is unchanged, only faster when guesses are often right). "
            "For a process backend put it on its command line (llama-server: --model-draft)."
        ),
    )
    draft_tokens: int = Field(default=4, ge=1, le=32, description="Most guesses per sequence and step.")
    mmproj: Path | None = Field(
        default=None,
        description=(
            "Vision: the model's multimodal projector GGUF (mmproj), so chat requests may carry images (worker "
            "backend; keep the file outside the models directory, or it is listed as a model). For a process "
            "backend put it on its command line (llama-server: --mmproj)."
        ),
    )
    embeddings: bool | None = Field(
        default=None,
        description="true: an embedding model (no text generation); false: no embeddings. Default: both.",
    )
    template: str | None = Field(
        default=None,
        description=(
            "Chat template: a built-in name (gemma, llama3, chatml, mistral, phi3) or a path to a Jinja file. "
            "Overrides the template stored in the GGUF."
        ),
    )
    reasoning_format: Literal["none", "auto", "deepseek", "harmony"] | None = Field(
        default=None,
        description=(
            "How a reasoning model's thinking is split from its answer: deepseek (a <think>...</think> block at "
            "the start, or one the chat template opens), harmony (gpt-oss: the analysis channel is the thinking, "
            "the final channel the answer, calls to functions are tool calls), none (left in the answer), auto "
            "(harmony when the chat template knows channels, deepseek when it knows think tags). Default: auto; a "
            "request may choose its own."
        ),
    )
    reasoning_budget: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Most tokens a reasoning model thinks before the engine closes its thought (0: no thinking), when a "
            "request sets no budget or effort. Default: no limit."
        ),
    )
    # -- exllamav3 backend --
    cache_size: int | None = Field(
        default=None,
        ge=256,
        description="exllamav3: KV cache tokens shared by all sequences, a multiple of 256 (default: ctx x "
        "parallel, so every sequence can use its whole ctx at once).",
    )
    gpu_split: list[float] | None = Field(
        default=None,
        description="exllamav3: GB of VRAM to use on each GPU, in order (TabbyAPI's gpu_split); 0 leaves a GPU out. "
        "Default: autosplit, filling the GPUs in order.",
    )
    tensor_parallel: bool = Field(
        default=False, description="exllamav3: split every layer across the GPUs (tensor parallelism)."
    )
    # -- lifecycle --
    ttl: Duration | None = Field(
        default=None, description="Unload after this long without requests (overrides the top-level ttl)."
    )
    pinned: bool = Field(default=False, description="Never unloaded for idleness or to make room.")
    group: str | None = Field(default=None, description="Swap group (see `groups:`).")
    memory: ByteSize | None = Field(
        default=None,
        description="Memory this model needs once loaded (default: estimated from the GGUF; process backends "
        "without a GGUF count as 0).",
    )
    defaults: ModelDefaults | None = Field(default=None, description="Request defaults for this model.")
    # -- process backend --
    command: list[str] | str | None = Field(
        default=None,
        description=(
            "Engine command line (process backend); {port}, {model_path} and {model_id} are filled in. A string "
            "is split like a shell would."
        ),
    )
    health_url: str = Field(
        default="http://127.0.0.1:{port}/health", description="Polled until the process backend answers 200."
    )
    ready_timeout: Duration | None = Field(default=None, gt=0, description="See engine.ready_timeout.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the process backend.")
    # -- upstream backend --
    urls: list[str] = Field(default_factory=list, description="Base URLs of a remote OpenAI-compatible server.")
    api_key: SecretStr | None = Field(default=None, description="Sent upstream as a bearer token.")
    upstream_model: str | None = Field(default=None, description="The model name upstream (default: `id`).")
    # -- pool --
    backends: list[PoolMember] = Field(
        default_factory=list,
        description=(
            "Several engines serving this model as one (any mix of worker, process and upstream members): "
            "requests go to the healthy member with the fewest in flight, weighted."
        ),
    )
    pool: PoolSettings = Field(default_factory=PoolSettings, description="Health checks and failover of `backends`.")

    @field_validator("tensor_split")
    @classmethod
    def _shares(cls, value: list[float] | None) -> list[float] | None:
        return check_tensor_split(value)

    @field_validator("gpu_split")
    @classmethod
    def _gigabytes(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) > 64 or any(gb < 0 for gb in value) or not any(value)):
            raise ValueError("gpu_split is a list of GB per GPU (at most 64, not negative, not all zero)")
        return value

    @field_validator("template")
    @classmethod
    def _template_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("template must be a built-in name or a file path")
        return value

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        return [_http_url(url) for url in urls]

    @property
    def kind(self) -> BackendKind:
        if self.backend is not None:
            return self.backend
        if self.backends:
            return "pool"
        if self.urls:
            return "upstream"
        if self.command:
            return "process"
        return "worker"

    def missing(self) -> str | None:
        """What the backend lacks to serve this model, if anything (checked once all sources are merged: a
        `models:` entry may tune a GGUF of the models directory without repeating its path)."""
        kind = self.kind
        if kind == "pool":
            return self._missing_in_pool()
        if self.backends:
            return f"model {self.id!r}: `backends` makes a pool; `backend` must be pool or left out"
        if kind == "worker" and self.path is None:
            return f"model {self.id!r}: the worker backend needs `path` (or give `command` or `urls`)"
        if kind == "exllamav3" and self.path is None:
            return f"model {self.id!r}: the exllamav3 backend needs `path` (an EXL3 model folder)"
        if kind == "process" and not self.command:
            return f"model {self.id!r}: the process backend needs `command`"
        if kind == "upstream" and not self.urls:
            return f"model {self.id!r}: the upstream backend needs `urls`"
        engine_keys = _engine_keys_problem(self)
        if engine_keys is not None:
            return f"model {self.id!r}: {engine_keys}"
        if self.draft_model is not None and kind not in ("worker", "exllamav3"):
            return (
                f"model {self.id!r}: `draft_model` is for worker models; a process backend takes it on its command "
                "line (llama-server: --model-draft)"
            )
        if self.mmproj is not None and kind != "worker":
            return (
                f"model {self.id!r}: `mmproj` is for worker models; a process backend takes it on its command line "
                "(llama-server: --mmproj)"
            )
        return None

    def _missing_in_pool(self) -> str | None:
        if not self.backends:
            return f"model {self.id!r}: the pool backend needs `backends`"
        for index, member in enumerate(self.backends):
            where = f"model {self.id!r}, backends[{index}]"
            kind = member.kind
            if kind == "worker" and (member.path or self.path) is None:
                return f"{where}: a worker member needs `path`"
            if kind == "process" and not (member.command or self.command):
                return f"{where}: a process member needs `command`"
            if kind == "upstream" and member.url is None:
                return f"{where}: an upstream member needs `url`"
        return None

    def member_entry(self, member: PoolMember) -> ModelEntry:
        """The entry a pool member is served from: this one, with the member's own keys over it."""
        update: dict[str, Any] = {"backend": member.kind, "backends": []}
        for key in ("path", "command", "health_url", "api_key", "upstream_model"):
            value = getattr(member, key)
            if value is not None:
                update[key] = value
        if member.url is not None:
            update["urls"] = [member.url]
        return self.model_copy(update=update)


_LLAMA_ONLY = (
    "threads",
    "gpu_layers",
    "rope_scale",
    "rope_base",
    "tensor_split",
    "split_mode",
    "main_gpu",
    "flash_attn",
)
_EXLLAMA_ONLY = ("cache_size", "gpu_split", "tensor_parallel")


def _engine_keys_problem(entry: ModelEntry) -> str | None:
    """Keys one engine has and the other lacks: refused where they cannot act rather than ignored."""
    given = entry.model_fields_set
    caches = {entry.cache_type, entry.cache_type_k, entry.cache_type_v} - {None}
    if entry.kind != "exllamav3":
        extra = [key for key in _EXLLAMA_ONLY if key in given]
        if extra:
            return f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} for the exllamav3 backend"
        if "q6" in caches:
            return "cache_type q6 (Q6) is ExLlamaV3's; llama.cpp's KV cache is f16, q8_0 or q4_0"
        return None
    extra = [key for key in _LLAMA_ONLY if key in given]
    if extra:
        return (
            f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} for llama.cpp (the worker backend); the "
            "exllamav3 backend splits a model over GPUs with gpu_split or tensor_parallel"
        )
    if entry.embeddings:
        return "the exllamav3 backend serves no embeddings"
    keys = entry.cache_type_k or entry.cache_type or "f16"
    values = entry.cache_type_v or entry.cache_type or "f16"
    if (keys == "f16") != (values == "f16"):
        return "ExLlamaV3 quantizes both keys and values or neither (cache_type_k and cache_type_v)"
    return None


class Group(Section):
    exclusive: bool = Field(
        default=True, description="Loading one member unloads the others (they never share the machine)."
    )


def entry_data(raw: dict[str, Any], model_id: str) -> dict[str, Any]:
    """A per-model file's mapping, with its id taken from the file name when absent."""
    return {"id": model_id, **raw}
