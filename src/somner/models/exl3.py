"""EXL3 model folders as the gateway sees them (the exllamav3 backend): is this one, how big, how much context.

An EXL3 folder is a Hugging Face model folder quantized by ExLlamaV3: `config.json` (with a
`quantization_config` whose `quant_method` is `exl3`), `tokenizer.json`, and the weights in `*.safetensors`. The
gateway reads only these small JSON files and the weights' sizes; the worker loads the model (`somner.exl3`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from somner.models.registry import ModelSpec

DEFAULT_CONTEXT = 4096  # the worker caps the training context at this when `ctx` is not set (like llama.cpp's)
PAGE = 256  # ExLlamaV3 allocates its cache in pages of this many tokens
# Bytes per cached element: f16, or b bits plus one 16-bit scale per 32 elements.
_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 8 / 8 + 2 / 32, "q6": 6 / 8 + 2 / 32, "q4_0": 4 / 8 + 2 / 32}


class Exl3FolderError(ValueError):
    """Not a usable EXL3 model folder; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Exl3Folder:
    path: Path
    architecture: str
    layers: int
    kv_heads: int
    head_dim: int
    trained_context: int | None
    weights_bytes: int


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Exl3FolderError(f"{path.parent.name} has no {path.name}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise Exl3FolderError(f"{path.parent.name}/{path.name} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise Exl3FolderError(f"{path.parent.name}/{path.name} is not a JSON object")
    return data


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_exl3_folder(path: Path) -> Exl3Folder:
    """What the folder's config says; `Exl3FolderError` when it is missing or not an EXL3 model."""
    if not path.is_dir():
        raise Exl3FolderError(f"{path} is not a folder")
    config = _json_object(path / "config.json")
    quantization = config.get("quantization_config")
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    if method != "exl3":
        raise Exl3FolderError(
            f"{path.name} is not an EXL3 model (quant_method {method!r}); the exllamav3 backend serves folders "
            "quantized to EXL3 (ExLlamaV3's convert.py)"
        )
    if not (path / "tokenizer.json").is_file():
        raise Exl3FolderError(f"{path.name} has no tokenizer.json")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise Exl3FolderError(f"{path.name} has no *.safetensors weights")
    # Multimodal models keep the language model's shape under text_config.
    text = {**config, **(config.get("text_config") or {})}
    architectures = config.get("architectures")
    heads = _int(text.get("num_attention_heads"))
    hidden = _int(text.get("hidden_size"))
    trained = _int(text.get("max_position_embeddings"))
    return Exl3Folder(
        path=path,
        architecture=str(architectures[0]) if isinstance(architectures, list) and architectures else "unknown",
        layers=_int(text.get("num_hidden_layers")),
        kv_heads=_int(text.get("num_key_value_heads")) or heads,
        head_dim=_int(text.get("head_dim")) or (hidden // heads if heads else 0),
        trained_context=trained or None,
        weights_bytes=sum(weight.stat().st_size for weight in weights),
    )


def context_of(folder: Exl3Folder, ctx: int | None) -> int:
    """One sequence's context (ExLlamaV3's max_seq_len): `ctx`, else the training context capped at 4096."""
    return ctx if ctx is not None else min(folder.trained_context or DEFAULT_CONTEXT, DEFAULT_CONTEXT)


def cache_tokens(ctx: int, parallel: int, cache_size: int | None) -> int:
    """The KV cache's size in tokens, as the worker sizes it (`somner.exl3.folder.sizes`): `cache_size`, else room
    for every sequence's whole context at once; never less than one context; in whole pages."""
    tokens = max(cache_size if cache_size is not None else ctx * parallel, ctx)
    return -(-tokens // PAGE) * PAGE


def model_bytes(spec: ModelSpec) -> int:
    """What an exllamav3 model puts on the GPUs: its weights, its KV cache, its LoRA adapters, and a draft
    model's weights and cache of the same size (the engine process and each GPU's CUDA context are counted by
    memory.py and placement.py). 0 when the folder cannot be read (the load will say why)."""
    assert spec.path is not None
    try:
        folder = read_exl3_folder(spec.path)
    except (Exl3FolderError, OSError):
        return 0
    keys, values = spec.cache_types
    tokens = cache_tokens(context_of(folder, spec.ctx), spec.parallel, spec.entry.cache_size)
    per_token = folder.layers * folder.kv_heads * folder.head_dim * (_ELEMENT_BYTES[keys] + _ELEMENT_BYTES[values])
    loras = sum(_folder_bytes(lora.path) for lora in spec.entry.loras)
    total = folder.weights_bytes + int(per_token * tokens) + loras
    if spec.entry.draft_model is not None:  # its weights and a cache as large as the model's
        entry = spec.entry.model_copy(
            update={"path": spec.entry.draft_model, "draft_model": None, "loras": [], "cache_size": tokens}
        )
        total += model_bytes(dataclasses.replace(spec, entry=entry))
    return total


def _folder_bytes(path: Path) -> int:
    """A LoRA adapter's size (a PEFT folder, or a single file)."""
    try:
        if path.is_dir():
            return sum(item.stat().st_size for item in path.glob("*.safetensors"))
        return path.stat().st_size
    except OSError:
        return 0
