"""The `somner worker` command line for a model: apart from the worker backend, because `somner serve` builds it
before it imports anything else of the gateway (head_start.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from somner.models.registry import ModelSpec


def worker_command(spec: ModelSpec, socket_path: Path, *, tracebacks: bool = True) -> list[str]:
    """The `somner worker` command line for `spec` (`tracebacks`: off under `privacy: strict`)."""
    entry = spec.entry
    assert spec.path is not None
    command = [sys.executable, "-m", "somner", "worker", "--model", str(spec.path), "--id", spec.id]
    command += ["--socket", str(socket_path), "--exit-with-parent"]
    command += ["--parallel", str(spec.parallel), "--batch", str(spec.batch), "--gpu-layers", str(spec.gpu_layers)]
    if spec.ctx is not None:
        command += ["--ctx", str(spec.ctx)]
    if spec.threads is not None:
        command += ["--threads", str(spec.threads)]
    if entry.template is not None:
        command += ["--template", entry.template]
    if spec.engine.cpu_repack:
        command.append("--cpu-repack")
    if spec.engine.swa_full:
        command.append("--swa-full")
    keys, values = spec.cache_types
    if (keys, values) != ("f16", "f16"):
        command += ["--cache-type-k", keys, "--cache-type-v", values]
    if spec.split_mode != "layer":
        command += ["--split-mode", spec.split_mode]
    if spec.main_gpu:
        command += ["--main-gpu", str(spec.main_gpu)]
    if spec.flash_attn != "auto":
        command += ["--flash-attn", spec.flash_attn]
    if entry.rope_base is not None:
        command += ["--rope-base", str(entry.rope_base)]
    if entry.rope_scale is not None:
        command += ["--rope-scale", str(entry.rope_scale)]
    if spec.tensor_split:
        command += ["--tensor-split", ",".join(str(x) for x in spec.tensor_split)]
    for lora in entry.loras:
        command += ["--lora", f"{lora.path}={lora.scale}"]
    if entry.embeddings is not None:
        command += ["--mode", "embed" if entry.embeddings else "generate"]
    if entry.draft_model is not None:
        command += ["--draft-model", str(entry.draft_model), "--draft-tokens", str(entry.draft_tokens)]
    if entry.mmproj is not None:
        command += ["--mmproj", str(entry.mmproj)]
    return command if tracebacks else [*command, "--no-tracebacks"]
