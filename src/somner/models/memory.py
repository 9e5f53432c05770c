"""How much memory a model needs once loaded (an estimate from its GGUF), and how much the machine offers.

The estimate errs high: weights (the file), a KV cache as if every layer kept the full context for every slot
(sliding-window layers really keep less), and a fixed allowance for buffers and the engine process itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from somner.models import exl3
from somner.models.gguf import GGUFError, read_gguf
from somner.models.placement import PROCESS_OVERHEAD, Footprint, first_excess
from somner.models.registry import ModelSpec

log = logging.getLogger(__name__)

_PROCESS_OVERHEAD = PROCESS_OVERHEAD
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
    if spec.kind == "exllamav3":  # an EXL3 folder, all on the GPUs (placement.py)
        on_gpus = exl3.model_bytes(spec)
        return on_gpus + _PROCESS_OVERHEAD if on_gpus else 0
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
    draft = 0
    if spec.entry.draft_model is not None:  # its weights and its own cache of the same slots
        entry = spec.entry.model_copy(update={"path": spec.entry.draft_model, "draft_model": None, "loras": []})
        draft = max(0, estimate_bytes(dataclasses.replace(spec, entry=entry)) - _PROCESS_OVERHEAD)
    return weights + kv + draft + _PROCESS_OVERHEAD


def fit_slots(spec: ModelSpec, budget: Mapping[str, int], estimate: Callable[[ModelSpec], Footprint]) -> ModelSpec:
    """`spec` with as many slots as `budget` holds (every resource it uses), when its `parallel` was left to the
    default: from the default (4) down to 1, the first whose estimate fits (each slot keeps the full `ctx`, so
    slots are what give way). An explicit `parallel` is never changed; a model that does not fit even with one slot
    is left to the budget's own refusal."""
    if spec.kind != "worker" or spec.entry.parallel is not None or "parallel" in spec.engine.model_fields_set:
        return spec
    wanted = spec.parallel
    for slots in range(wanted, 0, -1):
        candidate = dataclasses.replace(spec, entry=spec.entry.model_copy(update={"parallel": slots}))
        if first_excess(estimate(candidate), budget) is None:
            if slots < wanted:
                log.warning(
                    "model %s gets %d slots, not %d: that is what the memory budget holds with ctx %s per slot "
                    "(set `parallel` or `ctx` to choose otherwise)",
                    spec.id,
                    slots,
                    wanted,
                    spec.ctx or "default",
                )
            return candidate
    return spec


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
    """The default RAM budget: 80% of this machine's memory."""
    return int(machine_memory() * 0.8)
