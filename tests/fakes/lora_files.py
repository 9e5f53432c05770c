"""A small LoRA adapter for a real GGUF model, written with the `gguf` package: random low-rank updates of every
layer's attention query projection. Random weights are enough to show that an adapter changes the output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter


def make_lora(model: Path, target: Path, *, rank: int = 8, strength: float = 0.05, seed: int = 0) -> Path:
    """A LoRA adapter for `model` at `target` (adapter.lora.alpha = rank, so a scale of 1 applies B·A as is)."""
    reader = GGUFReader(model)
    architecture = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    rng = np.random.default_rng(seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(target, architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for tensor in reader.tensors:
        if not tensor.name.endswith(".attn_q.weight"):
            continue
        inputs, outputs = (int(n) for n in tensor.shape)  # ggml's order: [inputs, outputs]
        # numpy's order is ggml's reversed: lora_a is [inputs, rank] in ggml, lora_b [rank, outputs].
        writer.add_tensor(f"{tensor.name}.lora_a", (rng.standard_normal((rank, inputs)) * strength).astype(np.float32))
        writer.add_tensor(f"{tensor.name}.lora_b", (rng.standard_normal((outputs, rank)) * strength).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
