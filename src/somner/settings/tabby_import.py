"""TabbyAPI's `config.yml` as a Somner configuration (`somner config import-tabby`).

`convert` is pure: the mapping (data in, data out) plus a record of what happened to every option the file sets:
mapped (TabbyAPI key, Somner key), noted (mapped, with something the user must know or do), or not mapped (with the
reason). TabbyAPI drops null values before it reads its configuration, so null options count as absent. A file
that TabbyAPI itself would refuse (a section that is not a mapping, a value of the wrong type, an unknown section)
is a `TabbyConfigError` naming every problem; keys TabbyAPI does not know inside a known section are only warned
about, as TabbyAPI ignores them too.

Where the two servers differ in kind, the mapping says so rather than guessing: TabbyAPI serves ExLlama (EXL2/EXL3)
model folders, Somner serves GGUF files; LoRAs and draft models likewise. Per-model keys (cache mode, RoPE scale,
prompt template, GPU split, draft model, LoRAs) go to the `models:` entry of `model.model_name`, as Somner keeps
them per model; without a model name they have nowhere to go and are reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from somner.core.template_names import BUILTIN_TEMPLATES, TEMPLATE_ALIASES
from somner.models.names import is_valid_model_name

SECTIONS = (
    "config",
    "network",
    "logging",
    "model",
    "draft_model",
    "lora",
    "embeddings",
    "sampling",
    "memory",
    "developer",
)
"""TabbyAPI's top-level sections (`TabbyConfigModel`)."""

TABBY_DEFAULT_PORT = 5000
TABBY_DEFAULT_API_SERVERS = ["OAI"]

_API_SERVERS = {"oai": "openai", "kobold": "kobold"}
_CACHE_MODES = {"FP16": "f16", "Q8": "q8_0", "Q4": "q4_0", "8,8": "q8_0", "4,4": "q4_0"}
_MAX_PARALLEL = 256  # Somner's limits (settings.engine / settings.models)
_MIN_CTX = 256
_MIN_BATCH = 32
_MAX_DRAFT_TOKENS = 32

_GGUF = "Somner serves GGUF files with llama.cpp, not TabbyAPI's ExLlama (EXL2/EXL3) folders"

# Options with no Somner counterpart, and why (checked after the mapped ones are taken).
_NOT_MAPPED: dict[str, str] = {
    "config.config": "Somner reads one configuration file (`--config`); merge the override into it",
    "network.disable_fetch_requests": "image URLs are fetched only from the hosts in `limits.image_hosts`",
    "network.send_tracebacks": "Somner never sends tracebacks; errors carry a request id to find in its log",
    "logging.log_generation_params": "Somner logs one line per request, without sampler values",
    "model.backend": f"{_GGUF}; Somner's engine is its own llama.cpp worker",
    "model.use_as_default": "Somner has no load call with its own arguments: a model's settings live in its entry",
    "model.tensor_parallel": "llama.cpp splits a model over GPUs by layers; set `tensor_split` for shares per GPU",
    "model.tensor_parallel_backend": "no tensor parallelism in llama.cpp (layers are split over GPUs)",
    "model.gpu_split_auto": "llama.cpp splits layers over all GPUs by itself; `tensor_split` sets shares",
    "model.autosplit_reserve": "no per-GPU reserve; `memory_budget` bounds what loaded models may use",
    "model.cpu_moe_offload_layers": "no MoE offload setting; `engine.gpu_layers` sets how many layers go to GPUs",
    "model.rope_alpha": "NTK alpha has no llama.cpp equivalent; set the model entry's `rope_base` instead",
    "model.output_chunking": "an ExLlamaV3 cache detail; llama.cpp reserves each slot's ctx up front",
    "model.vision": "vision needs a GGUF model with its projector (`mmproj` in the model's entry)",
    "model.template_vars_default": "chat templates get only the messages, tools and the generation prompt",
    "model.template_vars_force": "chat templates get only the messages, tools and the generation prompt",
    "model.force_enable_thinking": "chat templates get no enable_thinking variable",
    "model.reasoning": "no reasoning parser: a model's thinking stays in the text",
    "model.reasoning_start_token": "no reasoning parser",
    "model.reasoning_end_token": "no reasoning parser",
    "model.start_in_reasoning": "no reasoning parser",
    "model.tool_calls_in_reasoning": "no reasoning parser",
    "model.reasoning_budget_tokens": "no reasoning budget",
    "model.reasoning_budget_message": "no reasoning budget",
    "model.tool_format": "not needed: Somner finds tool calls in the formats models are trained on by itself",
    "model.harmony": "no Harmony (gpt-oss) message parser",
    "model.muse_glimmer": "no Muse Glimmer message parser",
    "draft_model.draft_rope_scale": "a draft model uses the RoPE settings of its GGUF",
    "draft_model.draft_rope_alpha": "a draft model uses the RoPE settings of its GGUF",
    "draft_model.draft_cache_mode": "a draft model's KV cache is f16",
    "draft_model.draft_gpu_split": "a draft model is placed like its model",
    "draft_model.dynamic_draft": "the draft length is fixed (`draft_tokens`)",
    "draft_model.ngram_match_min": "no n-gram drafting (only a draft model)",
    "embeddings.embeddings_device": "embedding models run like any model (`engine.gpu_layers`)",
    "memory.sysmem_recurrent_cache": "an ExLlamaV3 cache setting; llama.cpp sizes its cache from ctx x parallel",
    "memory.sysmem_kv_cache": "no second-tier KV cache in system memory",
    "memory.cuda_malloc_async": "a PyTorch allocator setting; Somner's engine does not use PyTorch",
    "developer.unsafe_launch": "no ExLlama version check to skip",
    "developer.disable_request_streaming": "Somner streams when a request asks for it",
    "developer.realtime_process_priority": "set the priority from outside (nice, systemd's Nice=/CPUSchedulingPolicy=)",
    "developer.seqlog": "no Seq logging; `log_format: json` writes JSON lines a log shipper can forward",
    "developer.seqlog_server_url": "no Seq logging",
    "developer.seqlog_api_key": "no Seq logging",
}

# Every option TabbyAPI's configuration model has, by section (anything else in a known section is warned about).
_KNOWN: dict[str, tuple[str, ...]] = {
    "config": ("config",),
    "network": (
        "host",
        "port",
        "disable_auth",
        "disable_fetch_requests",
        "send_tracebacks",
        "api_servers",
        "sse_ping_interval",
    ),
    "logging": ("log_prompt", "log_generation_params", "log_requests", "log_chat_completion_requests"),
    "model": (
        "model_dir",
        "inline_model_loading",
        "use_dummy_models",
        "dummy_model_names",
        "model_name",
        "use_as_default",
        "backend",
        "max_seq_len",
        "cache_size",
        "cache_mode",
        "tensor_parallel",
        "tensor_parallel_backend",
        "gpu_split_auto",
        "autosplit_reserve",
        "gpu_split",
        "cpu_moe_offload_layers",
        "rope_scale",
        "rope_alpha",
        "chunk_size",
        "output_chunking",
        "max_batch_size",
        "prompt_template",
        "vision",
        "template_vars_default",
        "template_vars_force",
        "force_enable_thinking",
        "reasoning",
        "reasoning_start_token",
        "reasoning_end_token",
        "start_in_reasoning",
        "tool_calls_in_reasoning",
        "reasoning_budget_tokens",
        "reasoning_budget_message",
        "tool_format",
        "harmony",
        "muse_glimmer",
    ),
    "draft_model": (
        "draft_mode",
        "draft_model_dir",
        "draft_model_name",
        "draft_rope_scale",
        "draft_rope_alpha",
        "draft_cache_mode",
        "draft_gpu_split",
        "draft_num_tokens",
        "dynamic_draft",
        "ngram_match_min",
    ),
    "sampling": ("override_preset",),
    "lora": ("lora_dir", "loras"),
    "embeddings": ("embedding_model_dir", "embeddings_device", "embedding_model_name"),
    "memory": ("sysmem_recurrent_cache", "sysmem_kv_cache", "cuda_malloc_async"),
    "developer": (
        "unsafe_launch",
        "disable_request_streaming",
        "realtime_process_priority",
        "seqlog",
        "seqlog_server_url",
        "seqlog_api_key",
    ),
}


class TabbyConfigError(ValueError):
    """The file is not a TabbyAPI configuration TabbyAPI would accept; `problems` names each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one TabbyAPI option: `target` is the Somner key it became (None: not mapped), `reason`
    says why it was not mapped, or what to know about the mapping."""

    option: str
    target: str | None
    reason: str = ""


@dataclass
class Conversion:
    config: dict[str, Any] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def mapped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.target is not None]

    @property
    def not_mapped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.target is None]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (_is_int, "an integer"),
    "number": (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "str_list": (lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "a list of strings"),
    "number_list": (lambda v: isinstance(v, list) and all(_is_number(i) for i in v), "a list of numbers"),
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
    "list": (lambda v: isinstance(v, list), "a list"),
}

# The type of every option (TabbyAPI's pydantic model; "scalar" options take several kinds and are checked where
# they are read).
_TYPE_OF: dict[str, str] = {
    "config.config": "str",
    "network.host": "str",
    "network.port": "int",
    "network.disable_auth": "bool",
    "network.disable_fetch_requests": "bool",
    "network.send_tracebacks": "bool",
    "network.api_servers": "str_list",
    "network.sse_ping_interval": "int",
    "model.model_dir": "str",
    "model.inline_model_loading": "bool",
    "model.use_dummy_models": "bool",
    "model.dummy_model_names": "str_list",
    "model.model_name": "str",
    "model.use_as_default": "str_list",
    "model.backend": "str",
    "model.max_seq_len": "int",
    "model.cache_size": "int",
    "model.cache_mode": "str",
    "model.tensor_parallel": "bool",
    "model.tensor_parallel_backend": "str",
    "model.gpu_split_auto": "bool",
    "model.autosplit_reserve": "number_list",
    "model.gpu_split": "number_list",
    "model.cpu_moe_offload_layers": "int",
    "model.rope_scale": "number",
    "model.chunk_size": "int",
    "model.output_chunking": "bool",
    "model.max_batch_size": "int",
    "model.prompt_template": "str",
    "model.vision": "bool",
    "model.template_vars_default": "mapping",
    "model.template_vars_force": "mapping",
    "model.force_enable_thinking": "bool",
    "model.reasoning": "bool",
    "model.reasoning_start_token": "str",
    "model.reasoning_end_token": "str",
    "model.start_in_reasoning": "str",
    "model.tool_calls_in_reasoning": "bool",
    "model.reasoning_budget_tokens": "int",
    "model.reasoning_budget_message": "str",
    "model.tool_format": "str",
    "model.harmony": "bool",
    "model.muse_glimmer": "bool",
    "draft_model.draft_mode": "str",
    "draft_model.draft_model_dir": "str",
    "draft_model.draft_model_name": "str",
    "draft_model.draft_rope_scale": "number",
    "draft_model.draft_rope_alpha": "number",
    "draft_model.draft_cache_mode": "str",
    "draft_model.draft_gpu_split": "number_list",
    "draft_model.draft_num_tokens": "int",
    "draft_model.dynamic_draft": "bool",
    "draft_model.ngram_match_min": "int",
    "sampling.override_preset": "str",
    "lora.lora_dir": "str",
    "lora.loras": "list",
    "embeddings.embedding_model_dir": "str",
    "embeddings.embeddings_device": "str",
    "embeddings.embedding_model_name": "str",
    "memory.sysmem_recurrent_cache": "int",
    "memory.sysmem_kv_cache": "int",
    "memory.cuda_malloc_async": "bool",
    "developer.unsafe_launch": "bool",
    "developer.disable_request_streaming": "bool",
    "developer.realtime_process_priority": "bool",
    "developer.seqlog": "bool",
    "developer.seqlog_server_url": "str",
    "developer.seqlog_api_key": "str",
}


class _Reader:
    """The file's options, read once each; what is left at the end was not mapped."""

    def __init__(self, sections: dict[str, dict[str, Any]], conversion: Conversion) -> None:
        self.sections = sections
        self.out = conversion
        self.problems: list[str] = []
        self.pending: dict[str, Any] = {
            f"{name}.{key}": value
            for name, options in sections.items()
            for key, value in options.items()
            if value is not None
        }
        for option, value in list(self.pending.items()):
            kind = _TYPE_OF.get(option)
            if kind is None:
                continue
            check, wanted = _TYPES[kind]
            if not check(value):
                self.problems.append(f"{option}: expected {wanted}, got {value!r}")
                del self.pending[option]

    def take(self, option: str) -> Any:
        """The option's value (None when absent or null), marked as handled."""
        return self.pending.pop(option, None)

    def mapped(self, option: str, target: str, reason: str = "") -> None:
        self.out.outcomes.append(Outcome(option, target, reason))

    def not_mapped(self, option: str, reason: str) -> None:
        self.out.outcomes.append(Outcome(option, None, reason))


def _sections(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The sections as mappings, with TabbyAPI's own migration of legacy files applied (`model.draft`,
    `model.lora`, logging keys without their `log_` prefix)."""
    problems = []
    unknown = [str(name) for name in data if name not in SECTIONS]
    if unknown:
        problems.append(
            f"unknown top-level section(s): {', '.join(unknown)} (TabbyAPI's sections are {', '.join(SECTIONS)})"
        )
    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(f"section '{name}' must be a mapping of options, not {type(value).__name__}")
            continue
        sections[name] = {str(key): item for key, item in value.items()}
    if problems:
        raise TabbyConfigError(problems)
    model = sections.get("model", {})
    for legacy, section in (("draft", "draft_model"), ("lora", "lora")):
        if isinstance(model.get(legacy), dict):
            sections.setdefault(section, {}).update(model.pop(legacy))
    logging = sections.get("logging", {})
    for key in [k for k in logging if not k.startswith("log_")]:
        logging.setdefault(f"log_{key}", logging.pop(key))
    return sections


def convert(data: object) -> Conversion:
    """The Somner configuration for a TabbyAPI `config.yml`'s data. Raises `TabbyConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TabbyConfigError([f"a TabbyAPI config.yml holds a mapping of sections, not {type(data).__name__}"])
    sections = _sections(data)
    out = Conversion()
    reader = _Reader(sections, out)
    for name, options in sections.items():
        for key in options:
            if key not in _KNOWN[name]:
                out.warnings.append(f"{name}.{key}: not a TabbyAPI option (ignored, as TabbyAPI ignores it)")
                reader.pending.pop(f"{name}.{key}", None)
    entry: dict[str, Any] = {}
    _network(reader)
    _logging(reader)
    _model(reader, entry)
    _draft(reader, entry)
    _lora(reader, entry)
    _sampling(reader)
    _embeddings(reader)
    _model_entry(reader, entry)
    for option, _value in list(reader.pending.items()):
        reader.not_mapped(option, _NOT_MAPPED.get(option, "no Somner counterpart"))
        del reader.pending[option]
    if reader.problems:
        raise TabbyConfigError(reader.problems)
    out.outcomes.sort(key=lambda o: _order(o.option))
    return out


def _order(option: str) -> tuple[int, int]:
    section, _, key = option.partition(".")
    known = _KNOWN.get(section, ())
    return (SECTIONS.index(section) if section in SECTIONS else 99, known.index(key) if key in known else 99)


def _network(r: _Reader) -> None:
    config = r.out.config
    host = r.take("network.host")
    if host is not None:
        config["host"] = host
        r.mapped("network.host", "host")
    port = r.take("network.port")
    if port is not None and not 1 <= port <= 65535:
        r.not_mapped("network.port", f"{port} is not a TCP port")
    else:
        config["port"] = port if port is not None else TABBY_DEFAULT_PORT
        r.mapped(
            "network.port", "port", "" if port is not None else f"absent: TabbyAPI's default, {TABBY_DEFAULT_PORT}"
        )
    disable_auth = r.take("network.disable_auth")
    if disable_auth:
        config["auth"] = {"enabled": False}
        r.mapped(
            "network.disable_auth",
            "auth.enabled",
            "false; Somner refuses to run without keys on a non-loopback address unless `somner serve` is given "
            "--i-know-auth-is-off",
        )
    elif disable_auth is not None:
        r.mapped(
            "network.disable_auth",
            "auth.enabled",
            "true, Somner's default: TabbyAPI's api_tokens.yml is not "
            "read; import its keys with `somner keys import FILE` (lines name:key)",
        )
    _api_servers(r)
    ping = r.take("network.sse_ping_interval")
    if ping is not None:
        if ping < 0:
            r.not_mapped("network.sse_ping_interval", f"{ping} is negative")
        else:
            config["stream_keepalive"] = ping
            r.mapped("network.sse_ping_interval", "stream_keepalive", "seconds; 0: none, as in TabbyAPI")


def _api_servers(r: _Reader) -> None:
    names: list[str] | None = r.take("network.api_servers")
    given = names is not None
    if not names:  # TabbyAPI serves its OAI API when the list is absent or empty
        names = list(TABBY_DEFAULT_API_SERVERS)
    servers: list[str] = []
    unknown = []
    for name in names:
        server = _API_SERVERS.get(name.lower())
        if server is None:
            unknown.append(name)
        elif server not in servers:
            servers.append(server)
    if unknown:
        r.problems.append(f"network.api_servers: unknown server(s) {', '.join(unknown)} (TabbyAPI's are OAI, Kobold)")
        return
    servers.append("tabby")  # TabbyAPI's core routes are always on
    reason = (
        "OAI: openai, Kobold: kobold, plus tabby (TabbyAPI's own routes, /v1/model, /v1/token, ..., which it always "
        "serves); Somner also speaks ollama and anthropic, off here as in TabbyAPI"
    )
    if not given:
        reason = f"absent: TabbyAPI's default, {TABBY_DEFAULT_API_SERVERS}; " + reason
    r.out.config["api_servers"] = servers
    r.mapped("network.api_servers", "api_servers", reason)


def _logging(r: _Reader) -> None:
    values = {
        option: r.take(option)
        for option in ("logging.log_prompt", "logging.log_requests", "logging.log_chat_completion_requests")
    }
    if any(values.values()):
        r.out.config["log_requests"] = True
    for option, value in values.items():
        if value:
            r.mapped(
                option,
                "log_requests",
                "Somner's log_requests stores each request's prompt and completion text with its usage record (in "
                "the database, for log_retention_days), not in the console or in files",
            )
        elif value is not None:
            r.mapped(option, "log_requests")  # (false: as Somner's default)


def _relative(path: str) -> str:
    if path.startswith(("/", "~")):
        return ""
    return "; relative to TabbyAPI's folder: Somner resolves it from its own working directory, so make it absolute"


def _model(r: _Reader, entry: dict[str, Any]) -> None:
    config = r.out.config
    model_dir = r.take("model.model_dir")
    if model_dir is not None:
        config["models_dir"] = model_dir
        r.mapped("model.model_dir", "models_dir", f"{_GGUF}: put <name>.gguf files there{_relative(model_dir)}")
    inline = r.take("model.inline_model_loading")
    if inline is not None:
        r.not_mapped(
            "model.inline_model_loading",
            "no setting: Somner always loads the model a request names (limit who may use which with keys' "
            "model allow-lists: `somner keys create --models a,b`)",
        )
    names = r.take("model.dummy_model_names")
    use_dummies = r.take("model.use_dummy_models")
    if use_dummies and names:
        bad = [n for n in names if not is_valid_model_name(n)]
        if bad:
            r.not_mapped("model.dummy_model_names", f"not valid Somner model names: {', '.join(bad)}")
        else:
            config["dummy_models"] = names
            r.mapped("model.dummy_model_names", "dummy_models", "they answer with a real model, as in TabbyAPI")
        r.mapped("model.use_dummy_models", "dummy_models")
    else:
        if use_dummies is not None:
            r.not_mapped("model.use_dummy_models", "off (or no names): nothing to map")
        if names is not None:
            r.not_mapped("model.dummy_model_names", "use_dummy_models is off: the names are not served")
    _context(r)
    chunk = r.take("model.chunk_size")
    if chunk is not None:
        if chunk < _MIN_BATCH:
            r.not_mapped("model.chunk_size", f"{chunk} is below Somner's smallest engine.batch ({_MIN_BATCH})")
        else:
            config.setdefault("engine", {})["batch"] = chunk
            r.mapped("model.chunk_size", "engine.batch", "prompt tokens per scheduling step")
    _per_model(r, entry)


def _context(r: _Reader) -> None:
    """max_seq_len, cache_size and max_batch_size: Somner gives each of `parallel` slots the whole `ctx`, so the
    KV cache holds ctx x parallel tokens (TabbyAPI's jobs share one cache of cache_size tokens)."""
    engine: dict[str, Any] = {}
    seq = r.take("model.max_seq_len")
    size = r.take("model.cache_size")
    batch = r.take("model.max_batch_size")
    if seq is not None and seq < 0:
        r.not_mapped(
            "model.max_seq_len", "-1 (the model's own): Somner's default is the training context, capped at 4096"
        )
        seq = None
    elif seq is not None and seq < _MIN_CTX:
        r.not_mapped("model.max_seq_len", f"{seq} is below Somner's smallest ctx ({_MIN_CTX})")
        seq = None
    elif seq is not None:
        engine["ctx"] = seq
        r.mapped("model.max_seq_len", "engine.ctx", "tokens per sequence (prompt + output)")
    if batch is not None:
        parallel = max(1, min(batch, _MAX_PARALLEL))
        engine["parallel"] = parallel
        capped = f"; capped at Somner's {_MAX_PARALLEL}" if parallel != batch else ""
        r.mapped("model.max_batch_size", "engine.parallel", f"sequences decoded together{capped}")
    if size is not None:
        if "ctx" in engine and "parallel" not in engine:
            engine["parallel"] = max(1, min(size // engine["ctx"], _MAX_PARALLEL))
            r.mapped(
                "model.cache_size",
                "engine.parallel",
                f"cache_size / max_seq_len = {engine['parallel']} slots: the same KV cache (ctx x parallel tokens)",
            )
        elif "ctx" not in engine and seq is None and size >= _MIN_CTX:
            engine["ctx"] = size
            r.mapped("model.cache_size", "engine.ctx", "no max_seq_len: a sequence may use the whole cache")
        else:
            r.not_mapped("model.cache_size", "Somner sizes the KV cache as ctx x parallel (set by the keys above)")
    if engine:
        r.out.config.setdefault("engine", {}).update(engine)


def _per_model(r: _Reader, entry: dict[str, Any]) -> None:
    mode = r.take("model.cache_mode")
    if mode is not None:
        cache = _CACHE_MODES.get(mode.replace(" ", "").upper())
        if cache is None:
            r.not_mapped("model.cache_mode", f"{mode}: llama.cpp's KV cache is f16, q8_0 or q4_0 (FP16, Q8, Q4)")
        else:
            entry["cache_type"] = (cache, "model.cache_mode")
    scale = r.take("model.rope_scale")
    if scale is not None:
        if scale <= 0:
            r.not_mapped("model.rope_scale", f"{scale} is not a positive scale")
        elif scale != 1.0:
            entry["rope_scale"] = (1.0 / scale, "model.rope_scale")
        else:
            r.not_mapped("model.rope_scale", "1.0 is no scaling: the GGUF's own RoPE settings apply")
    template = r.take("model.prompt_template")
    if template is not None:
        entry["template"] = (template, "model.prompt_template")
    split = r.take("model.gpu_split")
    if split:
        entry["tensor_split"] = (split, "model.gpu_split")
    elif split is not None:
        r.not_mapped("model.gpu_split", "empty: llama.cpp splits over the GPUs by itself")


def _draft(r: _Reader, entry: dict[str, Any]) -> None:
    mode = r.take("draft_model.draft_mode")
    name = r.take("draft_model.draft_model_name")
    folder = r.take("draft_model.draft_model_dir")
    tokens = r.take("draft_model.draft_num_tokens")
    if mode is not None and mode != "model":
        r.not_mapped("draft_model.draft_mode", f"{mode}: Somner drafts with a draft model only (mode 'model')")
    elif mode is not None:
        r.mapped("draft_model.draft_mode", "draft_model", "a draft model, as in Somner")
    if name is None or (mode is not None and mode != "model"):
        for option, value in (("draft_model.draft_model_dir", folder), ("draft_model.draft_num_tokens", tokens)):
            if value is not None:
                r.not_mapped(option, "no draft model in use")
        if name is not None:
            r.not_mapped("draft_model.draft_model_name", f"draft_mode is {mode}")
        return
    path = f"{(folder or 'models').rstrip('/')}/{name}.gguf"
    entry["draft_model"] = (path, "draft_model.draft_model_name")
    if folder is not None:
        r.mapped("draft_model.draft_model_dir", "draft_model", f"the folder of {path}{_relative(folder)}")
    if tokens is not None:
        if 1 <= tokens <= _MAX_DRAFT_TOKENS:
            entry["draft_tokens"] = (tokens, "draft_model.draft_num_tokens")
        else:
            r.not_mapped("draft_model.draft_num_tokens", f"{tokens}: Somner drafts 1 to {_MAX_DRAFT_TOKENS} tokens")


def _lora(r: _Reader, entry: dict[str, Any]) -> None:
    folder = r.take("lora.lora_dir")
    items = r.take("lora.loras")
    if folder is not None:
        r.out.config["loras_dir"] = folder
        r.mapped("lora.lora_dir", "loras_dir", f"LoRA adapters must be GGUF files{_relative(folder)}")
    if not items:
        if items is not None:
            r.not_mapped("lora.loras", "empty")
        return
    loras = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            r.problems.append(f"lora.loras[{index}]: expected {{name, scaling}}, got {item!r}")
            continue
        scaling = item.get("scaling", 1.0)
        if not _is_number(scaling) or scaling < 0:
            r.problems.append(f"lora.loras[{index}].scaling: expected a number >= 0, got {scaling!r}")
            continue
        loras.append({"path": f"{(folder or 'loras').rstrip('/')}/{item['name']}.gguf", "scale": float(scaling)})
    if loras:
        entry["loras"] = (loras, "lora.loras")


def _sampling(r: _Reader) -> None:
    preset = r.take("sampling.override_preset")
    if preset is None:
        return
    r.out.config["sampler_preset"] = preset
    r.mapped(
        "sampling.override_preset",
        "sampler_preset",
        f"copy TabbyAPI's sampler_overrides/{preset}.yml into Somner's sampler_presets_dir",
    )


def _embeddings(r: _Reader) -> None:
    name = r.take("embeddings.embedding_model_name")
    folder = r.take("embeddings.embedding_model_dir")
    if name is None:
        if folder is not None:
            r.not_mapped("embeddings.embedding_model_dir", "no embedding model named")
        return
    if not is_valid_model_name(name):
        r.not_mapped("embeddings.embedding_model_name", f"{name!r} is not a valid Somner model id")
        return
    item: dict[str, Any] = {"id": name, "embeddings": True}
    if folder is not None:
        item["path"] = f"{folder.rstrip('/')}/{name}.gguf"
        r.mapped("embeddings.embedding_model_dir", f"models[{name}].path", f"a GGUF file{_relative(folder)}")
    r.out.config.setdefault("models", []).append(item)
    r.mapped(
        "embeddings.embedding_model_name",
        f"models[{name}]",
        f"an embedding model entry ({_GGUF}; it loads on its first request, as every model does)",
    )


_ENTRY_ORDER = ("cache_type", "rope_scale", "tensor_split", "template", "draft_model", "draft_tokens", "loras")


def _model_entry(r: _Reader, entry: dict[str, Any]) -> None:
    """`model.model_name` becomes `model` (loaded at start), and the per-model options its `models:` entry."""
    name = r.take("model.model_name")
    config = r.out.config
    if name is not None:
        config["model"] = name
        r.mapped("model.model_name", "model", f"{_GGUF}: Somner loads <models_dir>/{name}.gguf at start")
    if name is None or not is_valid_model_name(name):
        why = "no model.model_name" if name is None else f"{name!r} is not a valid Somner model id"
        for _value, option in entry.values():
            r.not_mapped(option, f"a per-model setting in Somner, and {why} to attach it to")
        return
    item: dict[str, Any] = {"id": name}
    for key in _ENTRY_ORDER:
        if key not in entry:
            continue
        value, option = entry[key]
        item[key] = value
        r.mapped(option, f"models[{name}].{key}", _ENTRY_NOTES.get(key, ""))
    if len(item) > 1:
        config.setdefault("models", []).insert(0, item)


_ENTRY_NOTES = {
    "cache_type": "llama.cpp's KV cache type",
    "rope_scale": "TabbyAPI's compress_pos_emb is llama.cpp's inverse (rope_scale = 1 / compress_pos_emb)",
    "tensor_split": "the GB per GPU, used as shares of the model per GPU",
    "template": "Somner's built-in templates are "
    + ", ".join(BUILTIN_TEMPLATES)
    + f" (also {', '.join(TEMPLATE_ALIASES)}); another name must be a Jinja file in templates_dir (NAME.jinja)",
    "draft_model": "a small GGUF with the same vocabulary as the model (not an ExLlama folder)",
    "draft_tokens": "most guesses per sequence and step",
    "loras": "GGUF LoRA adapters (convert TabbyAPI's with llama.cpp's convert_lora_to_gguf.py)",
}


def describe(outcome: Outcome) -> str:
    """One line: `option -> key: remark` for a mapped option, `option: reason` for another."""
    if outcome.target is None:
        return f"{outcome.option}: {outcome.reason}"
    line = f"{outcome.option} -> {outcome.target}"
    return f"{line}: {outcome.reason}" if outcome.reason else line


def render(conversion: Conversion, source: str) -> str:
    """The configuration as YAML, under a comment header that records every option's fate."""
    lines = [
        f"# Somner configuration imported from TabbyAPI's {source} by `somner config import-tabby`.",
        "# Check it with `somner config check --config FILE`; every key is documented by `somner config example`.",
    ]
    if conversion.mapped:
        lines += ["#", "# Mapped (TabbyAPI option -> Somner key):"]
        lines += [f"#   {describe(o)}" for o in conversion.mapped]
    if conversion.not_mapped:
        lines += ["#", "# Not mapped:"]
        lines += [f"#   {describe(o)}" for o in conversion.not_mapped]
    body = yaml.safe_dump(conversion.config, sort_keys=False, allow_unicode=True) if conversion.config else "{}\n"
    return "\n".join(lines) + "\n\n" + body
