"""The `exllamav3` backend: a `somner worker-exl3` process per model, driven exactly like a llama.cpp worker
(same socket, log file, readiness, heartbeat and stop; see worker.py). Only the model check and the command line
differ: the model is an EXL3 folder, and the engine's options are ExLlamaV3's."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from somner.errors import ModelLoadFailed
from somner.models.backends.worker import WorkerBackend
from somner.models.exl3 import Exl3FolderError, read_exl3_folder
from somner.models.registry import ModelSpec


def exl3_command(spec: ModelSpec, socket_path: Path) -> list[str]:
    entry = spec.entry
    assert spec.path is not None
    command = [sys.executable, "-m", "somner", "worker-exl3", "--model", str(spec.path), "--id", spec.id]
    command += ["--socket", str(socket_path), "--exit-with-parent"]
    command += ["--parallel", str(spec.parallel), "--batch", str(spec.batch)]
    if spec.ctx is not None:
        command += ["--ctx", str(spec.ctx)]
    if entry.cache_size is not None:
        command += ["--cache-size", str(entry.cache_size)]
    keys, values = spec.cache_types
    command += ["--cache-type-k", keys, "--cache-type-v", values]
    if entry.template is not None:
        command += ["--template", entry.template]
    if entry.draft_model is not None:
        command += ["--draft-model", str(entry.draft_model), "--draft-tokens", str(entry.draft_tokens)]
    for lora in entry.loras:
        command += ["--lora", f"{lora.path}={lora.scale}"]
    if entry.gpu_split:
        command += ["--gpu-split", ",".join(str(gb) for gb in entry.gpu_split)]
    if entry.tensor_parallel:
        command.append("--tensor-parallel")
    return command


class Exl3WorkerBackend(WorkerBackend):
    async def check_model(self) -> None:
        """A missing folder, or one that is not an EXL3 model, is refused before a process starts (a 503 that
        says why)."""
        path = self.spec.path
        if path is None or not path.is_dir():
            raise ModelLoadFailed(f"The model folder for '{self.spec.id}' is missing")
        try:
            await asyncio.to_thread(read_exl3_folder, path)
        except (Exl3FolderError, OSError) as exc:
            raise ModelLoadFailed(f"The model '{self.spec.id}' cannot be loaded: {exc}") from exc

    def command_at(self, socket_path: Path) -> list[str]:
        return exl3_command(self.spec, socket_path)
