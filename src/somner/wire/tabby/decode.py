"""TabbyAPI wire → core: token requests' messages, and load options as a model entry's keys."""

from __future__ import annotations

from typing import Any

from somner.core import Message
from somner.errors import BadRequest
from somner.wire.body import parse
from somner.wire.tabby import schemas

__all__ = ["load_options", "messages", "parse"]

_CACHE_MODES = {"FP16": "f16", "Q8": "q8_0", "Q6": "q6", "Q4": "q4_0"}  # (Q6: ExLlamaV3 models only)


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
    """TabbyAPI's cache_mode as a KV cache type: FP16, Q8, Q6 (exllamav3 models only: a GGUF model's entry refuses
    it) or Q4; "k,v" pairs have none."""
    found = _CACHE_MODES.get(mode.strip().upper())
    if found is None:
        raise BadRequest(
            f"Invalid value for 'cache_mode': {mode!r}; the cache modes are FP16, Q8, Q6 (ExLlamaV3 models) and Q4.",
            param="cache_mode",
        )
    return found


def load_options(request: schemas.ModelLoadRequest, draft_path: str | None, backend: str = "worker") -> dict[str, Any]:
    """The model entry keys a load request sets (`draft_path`: the draft model's file, resolved by the caller) for
    a model of `backend`. An ExLlamaV3 model takes TabbyAPI's cache_size, gpu_split and tensor_parallel as they
    are. For llama.cpp, whose cache is `ctx` per slot, cache_size becomes the number of slots (at least 1) unless
    max_batch_size says how many, gpu_split the shares of `tensor_split`, and tensor parallelism split_mode row."""
    exllama = backend == "exllamav3"
    options: dict[str, Any] = {}
    ctx = request.max_seq_len if request.max_seq_len is not None and request.max_seq_len > 0 else None
    if ctx is not None:
        options["ctx"] = ctx
    if request.max_batch_size is not None:
        options["parallel"] = request.max_batch_size
    if exllama and request.cache_size is not None:
        options["cache_size"] = request.cache_size
    elif request.max_batch_size is None and request.cache_size is not None and ctx is not None:
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
        options["gpu_split" if exllama else "tensor_split"] = list(request.gpu_split)
    if request.tensor_parallel:
        options.update({"tensor_parallel": True} if exllama else {"split_mode": "row"})
    for key in ("threads", "gpu_layers", "rope_base", "embeddings", "ttl"):
        value = getattr(request, key)
        if value is not None:
            options[key] = value
    if draft_path is not None:
        options["draft_model"] = draft_path
        if request.draft_model is not None and request.draft_model.draft_num_tokens is not None:
            options["draft_tokens"] = request.draft_model.draft_num_tokens
    return options
