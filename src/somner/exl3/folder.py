"""What an EXL3 model folder's Hugging Face files say that ExLlamaV3 itself does not keep: the chat template,
the special tokens' text, whether prompts start with BOS, and every end-of-generation token.

A chat template lives in `tokenizer_config.json` (`chat_template`: a string, or a list of named templates), or, in
newer folders, in `chat_template.jinja` or `chat_template.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class FolderError(ValueError):
    """The folder is not an EXL3 model Somner can serve; the message says why."""


def read_json(path: Path, *, required: bool = True) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise FolderError(f"{path.parent.name} has no {path.name}") from None
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FolderError(f"{path.parent.name}/{path.name} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise FolderError(f"{path.parent.name}/{path.name} is not a JSON object")
    return data


def _token_text(value: object) -> str:
    """A special token as tokenizer_config.json writes it: a string, or an object with its `content`."""
    if isinstance(value, str):
        return value
    content = value.get("content") if isinstance(value, dict) else None
    return content if isinstance(content, str) else ""


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _ids(value: object) -> set[int]:
    if isinstance(value, bool):
        return set()
    if isinstance(value, int):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, int) and not isinstance(item, bool)}
    return set()


def _template(folder: Path, tokenizer_config: dict[str, Any]) -> str | None:
    value = tokenizer_config.get("chat_template")
    if isinstance(value, list):  # named templates: the default one
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    if isinstance(value, str) and value.strip():
        return value
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    separate = read_json(folder / "chat_template.json", required=False).get("chat_template")
    return separate if isinstance(separate, str) and separate.strip() else None


@dataclass(frozen=True, slots=True)
class FolderInfo:
    architecture: str
    text_config: dict[str, Any]  # the language model's shape (config.json, or its text_config)
    chat_template: str | None
    bos_text: str
    eos_text: str
    add_bos: bool
    eos_ids: frozenset[int]  # from config.json and generation_config.json
    trained_context: int | None
    hidden_size: int
    vocab_size: int


def read_folder(folder: Path) -> FolderInfo:
    """FolderError when the folder is missing, or not quantized to EXL3."""
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder")
    config = read_json(folder / "config.json")
    quantization = config.get("quantization_config")
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    if method != "exl3":
        raise FolderError(f"{folder.name} is not an EXL3 model (quant_method {method!r})")
    tokenizer_config = read_json(folder / "tokenizer_config.json", required=False)
    generation_config = read_json(folder / "generation_config.json", required=False)
    text = {**config, **(config.get("text_config") or {})}
    architectures = config.get("architectures")
    trained = text.get("max_position_embeddings")
    add_bos = tokenizer_config.get("add_bos_token")
    return FolderInfo(
        architecture=str(architectures[0]) if isinstance(architectures, list) and architectures else "unknown",
        text_config=text,
        chat_template=_template(folder, tokenizer_config),
        bos_text=_token_text(tokenizer_config.get("bos_token")),
        eos_text=_token_text(tokenizer_config.get("eos_token")),
        # (Hugging Face's default for tokenizers that do not say, as TabbyAPI reads it.)
        add_bos=add_bos if isinstance(add_bos, bool) else True,
        eos_ids=frozenset(_ids(config.get("eos_token_id")) | _ids(generation_config.get("eos_token_id"))),
        trained_context=trained if isinstance(trained, int) and trained > 0 else None,
        hidden_size=_count(text.get("hidden_size")),
        vocab_size=_count(text.get("vocab_size")),
    )


DEFAULT_CONTEXT = 4096


def sizes(
    config_max_seq_len: int | None, cache_size: int | None, parallel: int, trained: int | None
) -> tuple[int, int]:
    """(max_seq_len, cache tokens): the configured context or the training context capped at 4096 (as the
    llama.cpp worker does); the configured cache, else room for every sequence's whole context at once; the cache
    in whole pages of 256 tokens, and never smaller than one sequence's context."""
    max_seq_len = config_max_seq_len or min(trained or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
    tokens = cache_size if cache_size is not None else max_seq_len * parallel
    tokens = max(tokens, max_seq_len)
    return max_seq_len, -(-tokens // 256) * 256


def architecture_family(architecture: str) -> str:
    """A Hugging Face architecture name in the GGUF style the template chooser knows (Qwen2ForCausalLM: qwen2)."""
    name = architecture
    for suffix in ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel", "Model"):
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    return name.lower()
