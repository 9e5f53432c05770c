"""GPU memory and utilization per device, for `/health`, `/metrics` and the memory budgets: through NVML
(`nvidia-ml-py`, imported when asked) when it finds a driver, else `nvidia-smi`, else nothing (no GPU, or no
NVIDIA driver). Readings are cached briefly so health checks stay cheap, and the query runs in a thread with a
timeout so a hung driver cannot hang `/health`."""

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
    utilization: float | None = None  # 0..1: the share of the last sample period a kernel ran


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
            try:
                utilization: float | None = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
            except Exception:  # (not every device reports it)
                utilization = None
            out.append(
                GpuMemory(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    used_bytes=int(info.used),
                    total_bytes=int(info.total),
                    utilization=utilization,
                )
            )
        return out
    finally:
        nvml.nvmlShutdown()


def parse_nvidia_smi(text: str) -> list[GpuMemory]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.used,memory.total[,utilization.gpu] --format=csv,noheader,
    nounits` (MiB, percent)."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (4, 5):
            continue
        try:
            utilization = float(parts[4]) / 100.0 if len(parts) == 5 and parts[4] not in ("", "[N/A]") else None
            out.append(
                GpuMemory(
                    index=int(parts[0]),
                    name=parts[1],
                    used_bytes=int(float(parts[2]) * 1024**2),
                    total_bytes=int(float(parts[3]) * 1024**2),
                    utilization=utilization,
                )
            )
        except ValueError:
            continue
    return out


def _from_nvidia_smi() -> list[GpuMemory]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    query = [
        binary,
        "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
        "--format=csv,noheader,nounits",
    ]
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

    async def readings(self) -> list[GpuMemory]:
        async with self._lock:
            if time.monotonic() - self._read_at > self.max_age:
                try:
                    async with asyncio.timeout(6):
                        self._devices = await asyncio.to_thread(read_gpu_memory)
                except TimeoutError:
                    self._devices = []
                self._read_at = time.monotonic()
            return list(self._devices)

    @property
    def latest(self) -> list[GpuMemory]:
        """The last reading, without reading again (for collectors that cannot wait)."""
        return list(self._devices)

    async def devices(self) -> list[dict[str, Any]]:
        return [asdict(d) for d in await self.readings()]
