"""How much memory a model needs once loaded (an estimate from its GGUF), and how much the machine offers.

The estimate errs high: weights (the file), a KV cache as if every layer kept the full context for every slot
(sliding-window layers really keep less), and a fixed allowance for buffers and the engine process itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from somner.models.gguf import GGUFError, read_gguf
from somner.models.registry import ModelSpec

_PROCESS_OVERHEAD = 160 * 1024**2  # interpreter, libraries, compute buffers
_CACHE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
_DEFAULT_CTX_CAP = 4096


def estimate_bytes(spec: ModelSpec) -> int:
    """Bytes `spec` will hold when loaded; 0 for remote models and for engines Somner cannot see into."""
    if spec.entry.memory is not None:
        return int(spec.entry.memory)
    if spec.kind == "pool":  # every local member holds its own copy; remote ones count nothing
        entry = spec.entry
        return sum(
            estimate_bytes(ModelSpec(entry=entry.member_entry(member), engine=spec.engine, source=spec.source))
            for member in entry.backends
        )
    if spec.kind == "upstream" or spec.path is None:
        return 0
    try:
        info = read_gguf(spec.path)
        weights = spec.path.stat().st_size + sum(lora.path.stat().st_size for lora in spec.entry.loras)
    except (GGUFError, OSError):
        return 0  # unreadable: the load itself will say why
    if spec.kind == "process":
        return weights + _PROCESS_OVERHEAD
    layers = _int(info.arch_value("block_count"))
    heads = _int(info.arch_value("attention.head_count"))
    kv_heads = _int(info.arch_value("attention.head_count_kv")) or heads
    embedding = _int(info.arch_value("embedding_length"))
    key = _int(info.arch_value("attention.key_length")) or (embedding // heads if heads else 0)
    value = _int(info.arch_value("attention.value_length")) or key
    train_ctx = info.context_length or _DEFAULT_CTX_CAP
    ctx = spec.ctx or min(train_ctx, _DEFAULT_CTX_CAP)
    per_token = layers * kv_heads * (key + value) * _CACHE_BYTES[spec.entry.cache_type or "f16"]
    kv = int(per_token * ctx * spec.parallel)
    return weights + kv + _PROCESS_OVERHEAD


def _int(value: object) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def machine_memory() -> int:
    """Bytes of memory this process may use: the cgroup limit when there is one, else physical memory."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            return int(text)
    return total


def default_budget() -> int:
    return int(machine_memory() * 0.8)
