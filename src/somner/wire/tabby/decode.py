"""TabbyAPI wire → core: token requests' messages, and load options as a model entry's keys."""

from __future__ import annotations

from typing import Any

from somner.core import Message
from somner.errors import BadRequest
from somner.wire.body import parse
from somner.wire.tabby import schemas

__all__ = ["load_options", "messages", "parse"]

_CACHE_MODES = {"FP16": "f16", "Q8": "q8_0", "Q4": "q4_0"}


def messages(items: list[schemas.TokenMessage]) -> list[Message]:
    """Chat messages to tokenize as core messages (their text parts joined)."""
    out = []
    for item in items:
        content = item.content
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            text = "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
        out.append(Message(role=item.role, content=text))
    return out


def cache_type(mode: str) -> str:
    """TabbyAPI's cache_mode as llama.cpp's KV cache type (FP16, Q8, Q4; Q6 and "k,v" pairs have none)."""
    found = _CACHE_MODES.get(mode.strip().upper())
    if found is None:
        raise BadRequest(
            f"Invalid value for 'cache_mode': {mode!r}; this engine's cache modes are FP16, Q8 and Q4.",
            param="cache_mode",
        )
    return found


def load_options(request: schemas.ModelLoadRequest, draft_path: str | None) -> dict[str, Any]:
    """The model entry keys a load request sets (`draft_path`: the draft model's file, resolved by the caller).
    TabbyAPI's cache_size is the whole cache in tokens; llama.cpp's cache is `ctx` per slot, so it becomes the
    number of slots (at least 1) unless max_batch_size says how many."""
    options: dict[str, Any] = {}
    ctx = request.max_seq_len if request.max_seq_len is not None and request.max_seq_len > 0 else None
    if ctx is not None:
        options["ctx"] = ctx
    if request.max_batch_size is not None:
        options["parallel"] = request.max_batch_size
    elif request.cache_size is not None and ctx is not None:
        options["parallel"] = max(1, request.cache_size // ctx)
    if request.cache_mode is not None:
        options["cache_type"] = cache_type(request.cache_mode)
    if request.chunk_size is not None:
        options["batch"] = request.chunk_size
    if request.prompt_template is not None:
        options["template"] = request.prompt_template
    if request.rope_scale is not None:
        options["rope_scale"] = request.rope_scale
    if request.gpu_split:
        options["tensor_split"] = list(request.gpu_split)
    for key in ("threads", "gpu_layers", "rope_base", "embeddings", "ttl"):
        value = getattr(request, key)
        if value is not None:
            options[key] = value
    if draft_path is not None:
        options["draft_model"] = draft_path
        if request.draft_model is not None and request.draft_model.draft_num_tokens is not None:
            options["draft_tokens"] = request.draft_model.draft_num_tokens
    return options
