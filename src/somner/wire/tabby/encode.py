"""Core → TabbyAPI wire: model and LoRA cards, lists, load progress events, and TabbyAPI's error shapes."""

from __future__ import annotations

import time
from typing import Any

import orjson

from somner.errors import SomnerError
from somner.wire import sse

OWNER = "somner"
CACHE_MODES = {"f16": "FP16", "q8_0": "Q8", "q6": "Q6", "q4_0": "Q4"}


def error_body(error: SomnerError) -> dict[str, Any]:
    """An HTTP error as TabbyAPI (FastAPI) answers it: `{"detail": "..."}`."""
    return {"detail": error.message}


def error_event(error: SomnerError) -> bytes:
    """An error inside one of TabbyAPI's own streams (model load): `{"error": {"message", "trace"}}`."""
    return sse.event(orjson.dumps({"error": {"message": error.message, "trace": None}}))


def model_card(
    model_id: str,
    parameters: dict[str, Any] | None = None,
    created: int | None = None,
    capabilities: list[str] | None = None,
) -> dict[str, Any]:
    card = {
        "id": model_id,
        "object": "model",
        "created": created if created is not None else int(time.time()),
        "owned_by": OWNER,
        "logging": None,
        "parameters": parameters,
    }
    if capabilities is not None:
        card["capabilities"] = capabilities  # (an extension: what the model can do)
    return card


def model_list(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": cards}


def card_parameters(
    *,
    max_seq_len: int | None,
    slots: int,
    cache_types: tuple[str, str],
    rope_scale: float | None,
    chunk_size: int,
    prompt_template: str | None,
    prompt_template_content: str | None,
    draft: dict[str, Any] | None,
) -> dict[str, Any]:
    """A loaded model's `parameters`, in TabbyAPI's field order (its cache is `max_seq_len` per slot)."""
    return {
        "max_seq_len": max_seq_len,
        "cache_size": max_seq_len * slots if max_seq_len is not None else None,
        "cache_mode": _cache_mode(*cache_types),
        "rope_scale": rope_scale if rope_scale is not None else 1.0,
        "rope_alpha": 1.0,
        "max_batch_size": slots,
        "chunk_size": chunk_size,
        "prompt_template": prompt_template,
        "prompt_template_content": prompt_template_content,
        "use_vision": False,
        "draft": draft,
    }


def _cache_mode(keys: str, values: str) -> str:
    """TabbyAPI's name of a KV cache precision; keys and values apart as "K,V" when they differ."""
    if keys == values:
        return CACHE_MODES.get(keys, keys)
    return f"{CACHE_MODES.get(keys, keys)},{CACHE_MODES.get(values, values)}"


def load_event(module: int, modules: int, status: str, model_type: str = "model") -> bytes:
    """One progress event of a model load (`status`: processing or finished)."""
    return sse.event(orjson.dumps({"model_type": model_type, "module": module, "modules": modules, "status": status}))


def lora_card(name: str, scaling: float | None) -> dict[str, Any]:
    return {"id": name, "object": "lora", "created": int(time.time()), "owned_by": OWNER, "scaling": scaling}


def lora_list(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": cards}
