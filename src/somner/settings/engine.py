"""`engine:` defaults for every model served by Somner's own worker."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from somner.settings.types import Duration, Section


class EngineSettings(Section):
    """Defaults for every model served by Somner's own engine worker; a `models:` entry may override each."""

    ctx: int | None = Field(
        default=None,
        ge=256,
        description=(
            "Context length in tokens that EACH concurrent sequence gets (prompt + output). The KV cache is "
            "sized ctx x parallel, so raising either raises memory use. Default: the model's training "
            "context, capped at 4096."
        ),
    )
    parallel: int = Field(
        default=4,
        ge=1,
        le=256,
        description=(
            "Sequences decoded together in one batch (slots); further requests wait in a FIFO queue. Left at "
            "the default, a model gets fewer slots when the memory budget cannot hold 4 with the full ctx each."
        ),
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for llama.cpp. Default: the number of CPUs this process may use.",
    )
    batch: int = Field(
        default=512,
        ge=32,
        description="Prompt tokens processed per scheduling step (chunked prefill budget).",
    )
    gpu_layers: int = Field(
        default=-1,
        ge=-1,
        description=(
            "Layers offloaded to the GPUs when llama.cpp was built with GPU support and a GPU is there; -1 means "
            "all. Without a GPU the same configuration runs on the CPU (the engine's log says so once)."
        ),
    )
    split_mode: Literal["none", "layer", "row"] = Field(
        default="layer",
        description=(
            "How a model is spread over several GPUs: layer (whole layers per GPU, by tensor_split), row (each "
            "layer's rows over the GPUs: llama.cpp's tensor parallelism), none (all on main_gpu)."
        ),
    )
    main_gpu: int = Field(
        default=0, ge=0, le=63, description="The GPU for split_mode none (and row mode's small tensors)."
    )
    tensor_split: list[float] | None = Field(
        default=None,
        description="Share of each model per GPU, e.g. [3, 1] (default: in proportion to each GPU's memory).",
    )
    flash_attn: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Flash attention: auto (llama.cpp decides by device), on, off. A quantized V cache needs it.",
    )
    cpu_repack: bool = Field(
        default=False,
        description=(
            "Let llama.cpp repack weights for faster CPU matrix kernels. Off by default because results then "
            "also depend on a request's place in the batch (see the README on determinism)."
        ),
    )
    swa_full: bool = Field(
        default=False,
        description=(
            "Keep the whole context in the sliding-window layers' cache (Gemma 3, gpt-oss, ...), not only their "
            "window: costs that cache's full size, and lets a prompt reuse a cached or shared start (a long system "
            "prompt) longer than the window."
        ),
    )
    ready_timeout: Duration = Field(
        default=120.0, gt=0, description="How long a starting engine may take to load its model."
    )
    stop_timeout: Duration = Field(
        default=10.0, gt=0, description="Grace period between SIGTERM and SIGKILL when an engine stops."
    )
    read_timeout: Duration = Field(
        default=300.0, gt=0, description="Longest silence tolerated from an engine while it generates."
    )
    hang_timeout: Duration = Field(
        default=20.0,
        ge=0,
        description=(
            "An engine with requests in flight that answers no health check for this long is hung: it is killed "
            "and a fresh one started; its streams end with an error event, and requests that had no token yet run "
            "on the fresh engine. /ready answers 503 meanwhile. 0: never (engines the manager runs: workers and "
            "process backends)."
        ),
    )

    @field_validator("tensor_split")
    @classmethod
    def _shares(cls, value: list[float] | None) -> list[float] | None:
        return check_tensor_split(value)


def check_tensor_split(value: list[float] | None) -> list[float] | None:
    """Shares per GPU: at most 64, none negative, not all zero."""
    if value is None:
        return None
    if len(value) > 64 or any(share < 0 for share in value) or (value and not any(value)):
        raise ValueError("tensor_split is a list of shares per GPU (at most 64, not negative, not all zero)")
    return value
