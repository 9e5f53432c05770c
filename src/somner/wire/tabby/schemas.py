"""TabbyAPI request bodies, in its field order, with its aliases. Somner's extensions are marked.

Fields TabbyAPI accepts but that mean nothing to a llama.cpp engine (`backend`, `tensor_parallel_backend`,
`output_chunking`, `autosplit_reserve`, `skip_queue`) are accepted and ignored, so its clients work unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field

from somner.wire.body import RequestBody, WireObject

_NAME = Annotated[str, Field(min_length=1, max_length=256)]


class DraftModelLoadRequest(WireObject):
    draft_model_name: _NAME = Field(validation_alias=AliasChoices("draft_model_name", "name"))
    draft_rope_scale: float | None = Field(default=None, gt=0)
    draft_rope_alpha: float | str | None = None
    draft_gpu_split: list[Annotated[float, Field(ge=0)]] = Field(default_factory=list, max_length=64)
    # Extension: guesses per step (TabbyAPI's draft_num_tokens lives in its config only).
    draft_num_tokens: int | None = Field(default=None, ge=1, le=32)


class ModelLoadRequest(RequestBody):
    model_name: _NAME = Field(validation_alias=AliasChoices("model_name", "name"))
    backend: str | None = None
    max_seq_len: int | None = Field(default=None, ge=-1, le=2**24)
    cache_size: int | None = Field(default=None, ge=256, le=2**28)
    cache_mode: str | None = None
    tensor_parallel: bool | None = None
    tensor_parallel_backend: str | None = None
    gpu_split_auto: bool | None = None
    autosplit_reserve: list[float] | None = None
    gpu_split: list[Annotated[float, Field(ge=0)]] | None = Field(default=None, max_length=64)
    rope_scale: float | None = Field(default=None, gt=0)
    rope_alpha: float | str | None = None
    chunk_size: int | None = Field(default=None, ge=32, le=2**20)
    output_chunking: bool | None = None
    max_batch_size: int | None = Field(default=None, ge=1, le=256)
    prompt_template: str | None = Field(default=None, max_length=256)
    vision: bool | None = None
    draft_model: DraftModelLoadRequest | None = Field(
        default=None, validation_alias=AliasChoices("draft_model", "draft")
    )
    skip_queue: bool | None = None
    # Extensions: Somner's own model options (see the `models:` keys), and whether to stream the progress.
    threads: int | None = Field(default=None, ge=1, le=1024)
    gpu_layers: int | None = Field(default=None, ge=-1, le=100_000)
    rope_base: float | None = Field(default=None, gt=0)
    embeddings: bool | None = None
    ttl: float | str | None = None
    stream: bool = True


class LoraSpec(WireObject):
    name: _NAME
    scaling: float = Field(default=1.0, ge=0.0, le=100.0)


class LoraLoadRequest(RequestBody):
    loras: list[LoraSpec] = Field(max_length=32)
    skip_queue: bool | None = None
    model: str | None = None  # extension: which model (default: the current one)


class TemplateSwitchRequest(RequestBody):
    prompt_template_name: _NAME = Field(validation_alias=AliasChoices("prompt_template_name", "name"))
    model: str | None = None  # extension


class SamplerOverrideSwitchRequest(RequestBody):
    preset: _NAME | None = None
    overrides: dict[str, Any] | None = None


class TokenMessage(WireObject):
    """A chat message to tokenize (text content only)."""

    role: str = "user"
    content: str | list[dict[str, Any]] | None = None


class TokenEncodeRequest(RequestBody):
    text: str | list[TokenMessage]
    template_vars: dict[str, Any] | None = Field(
        default=None, validation_alias=AliasChoices("template_vars", "chat_template_kwargs")
    )
    add_bos_token: bool = True
    encode_special_tokens: bool = True
    decode_special_tokens: bool = True
    model: str | None = None  # extension


class TokenDecodeRequest(RequestBody):
    tokens: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(max_length=1_000_000)
    add_bos_token: bool = True
    encode_special_tokens: bool = True
    decode_special_tokens: bool = True
    model: str | None = None  # extension


class UnloadRequest(RequestBody):
    """Extension: which model to unload (TabbyAPI has one; Somner unloads every loaded model without this)."""

    model: str | None = None
