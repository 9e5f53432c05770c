"""GPU memory per device, for `/health`: through NVML when `pynvml` is importable, else `nvidia-smi`, else
nothing (no GPU, or no NVIDIA driver). Readings are cached briefly so health checks stay cheap, and the query
runs in a thread with a timeout so a hung driver cannot hang `/health`."""

from __future__ import annotations

import asyncio
import importlib
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GpuMemory:
    index: int
    name: str
    used_bytes: int
    total_bytes: int


def _from_nvml() -> list[GpuMemory] | None:
    try:
        nvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # the library is there but no driver: no GPU to report
        return None
    try:
        out = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            out.append(
                GpuMemory(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    used_bytes=int(info.used),
                    total_bytes=int(info.total),
                )
            )
        return out
    finally:
        nvml.nvmlShutdown()


def parse_nvidia_smi(text: str) -> list[GpuMemory]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv,noheader,nounits` (MiB)."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            out.append(
                GpuMemory(
                    index=int(parts[0]),
                    name=parts[1],
                    used_bytes=int(float(parts[2]) * 1024**2),
                    total_bytes=int(float(parts[3]) * 1024**2),
                )
            )
        except ValueError:
            continue
    return out


def _from_nvidia_smi() -> list[GpuMemory]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    query = [binary, "--query-gpu=index,name,memory.used,memory.total", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=5, check=False)  # noqa: S603 (a fixed argv)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else []


def read_gpu_memory() -> list[GpuMemory]:
    found = _from_nvml()
    return found if found is not None else _from_nvidia_smi()


class GpuMonitor:
    """The latest reading, at most `max_age` seconds old."""

    def __init__(self, max_age: float = 5.0) -> None:
        self.max_age = max_age
        self._read_at = float("-inf")
        self._devices: list[GpuMemory] = []
        self._lock = asyncio.Lock()

    async def devices(self) -> list[dict[str, Any]]:
        async with self._lock:
            if time.monotonic() - self._read_at > self.max_age:
                try:
                    async with asyncio.timeout(6):
                        self._devices = await asyncio.to_thread(read_gpu_memory)
                except TimeoutError:
                    self._devices = []
                self._read_at = time.monotonic()
            return [asdict(d) for d in self._devices]
