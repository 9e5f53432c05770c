"""What a llama.cpp engine is started with: kept apart from the engine so that a worker can read it, and begin
loading the model (preload.py), before it imports the engine itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["both", "generate", "embed", "rerank"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model_path: Path
    model_id: str
    ctx: int | None = None
    parallel: int = 4
    threads: int | None = None
    batch: int = 512
    gpu_layers: int = -1
    cpu_repack: bool = False
    swa_full: bool = False  # sliding-window layers cache the whole context (longer prefix reuse)
    template: str | None = None
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    split_mode: Literal["none", "layer", "row"] = "layer"
    main_gpu: int = 0
    flash_attn: Literal["auto", "on", "off"] = "auto"
    rope_base: float = 0.0
    rope_scale: float = 0.0
    tensor_split: tuple[float, ...] = ()
    loras: tuple[tuple[Path, float], ...] = ()
    # "embed": an embedding model (no text generation); "generate": no embeddings. A reranker GGUF (rank pooling
    # and a classification head) is always "rerank": it only scores (query, document) pairs.
    mode: Mode = "both"
    draft_model: Path | None = None  # speculative decoding (see speculative.py)
    draft_tokens: int = 4
    mmproj: Path | None = None  # a multimodal projector: images in chat requests (see vision.py)
