"""Where a loaded model's memory goes: this machine's RAM, and each GPU's memory (a footprint), and the budgets
that bound them.

A footprint maps a resource (`ram`, `gpu0`, `gpu1`, ...) to bytes. A llama.cpp model with `gpu_layers` of its L
layers on the GPUs puts that share of its weights and KV cache on them (spread by `tensor_split`, else in
proportion to each GPU's memory; all on `main_gpu` with `split_mode: none`), plus each GPU's own context and compute
buffers; the rest, and the engine process, is RAM. An ExLlamaV3 model lives on the GPUs entirely. Without a GPU
(or a llama.cpp built without GPU support) everything is RAM. Each resource has its own budget; a model loads when
every resource it needs has room (see eviction.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from somner.models.gguf import GGUFError, read_gguf
from somner.models.registry import ModelSpec

RAM = "ram"
Footprint = Mapping[str, int]

GPU_OVERHEAD = 384 * 1024**2  # per GPU an engine uses: its CUDA context, cuBLAS workspace and compute buffers
PROCESS_OVERHEAD = 160 * 1024**2  # the engine process in RAM (interpreter, libraries, host buffers)
_ON_GPUS = frozenset({"exllamav3"})  # engines that keep a model on the GPUs entirely


def gpu(index: int) -> str:
    return f"gpu{index}"


@dataclass(frozen=True, slots=True)
class Device:
    """A GPU as the budgets see it."""

    index: int
    total_bytes: int


def gpu_problem(spec: ModelSpec, devices: Sequence[Device]) -> str | None:
    """GPU options that this machine's GPUs cannot honour (None on a machine without GPUs: the model runs on the
    CPU there, whatever its GPU options say)."""
    if not devices or spec.kind != "worker":
        return None
    count = len(devices)
    if len(spec.tensor_split) > count:
        return (
            f"model {spec.id!r}: tensor_split has {len(spec.tensor_split)} shares, and this machine has "
            f"{count} GPU{'s' if count != 1 else ''}"
        )
    if spec.main_gpu >= count:
        return f"model {spec.id!r}: main_gpu {spec.main_gpu} does not exist (GPUs 0 to {count - 1})"
    return None


def total(footprint: Footprint) -> int:
    return sum(footprint.values())


def _layers(spec: ModelSpec) -> int:
    if spec.path is None or not spec.path.is_file():
        return 0
    try:
        blocks = read_gguf(spec.path).arch_value("block_count")
    except (GGUFError, OSError):
        return 0
    return blocks if isinstance(blocks, int) and blocks > 0 else 0


def gpu_share(spec: ModelSpec, *, llama_gpu: bool = True) -> float:
    """The part of the model's weights and KV cache its `gpu_layers` put on the GPUs (`llama_gpu`: whether the
    installed llama.cpp can offload at all)."""
    if spec.kind in _ON_GPUS:
        return 1.0
    if spec.kind != "worker" or spec.gpu_layers == 0 or not llama_gpu:
        return 0.0
    layers = _layers(spec)
    if spec.gpu_layers < 0 or not layers or spec.gpu_layers >= layers:
        return 1.0
    return spec.gpu_layers / layers


def device_shares(spec: ModelSpec, devices: Sequence[Device]) -> dict[int, float]:
    """How the GPU part spreads over the GPUs (shares summing to 1)."""
    if not devices:
        return {}
    known = {device.index for device in devices}
    if spec.kind == "exllamav3":  # gpu_split: GB per GPU (TabbyAPI's), used as shares; else autosplit
        split_of = list(spec.entry.gpu_split or [])
    elif spec.split_mode == "none":
        return {spec.main_gpu: 1.0} if spec.main_gpu in known else {devices[0].index: 1.0}
    else:
        split_of = spec.tensor_split
    split = {i: share for i, share in enumerate(split_of) if i in known and share > 0}
    if not split:
        split = {device.index: float(device.total_bytes) for device in devices}
    whole = sum(split.values())
    return {index: share / whole for index, share in split.items()}


def place(spec: ModelSpec, estimate: int, devices: Sequence[Device], *, llama_gpu: bool = True) -> dict[str, int]:
    """A model's footprint, from its estimate (bytes in all) and the GPUs there are (none: all RAM)."""
    if estimate <= 0:
        return {}
    share = gpu_share(spec, llama_gpu=llama_gpu) if devices else 0.0
    if share <= 0:
        return {RAM: estimate}
    movable = max(0, estimate - PROCESS_OVERHEAD)
    on_gpus = int(movable * share)
    footprint = {RAM: estimate - on_gpus}
    for index, part in device_shares(spec, devices).items():
        footprint[gpu(index)] = int(on_gpus * part) + GPU_OVERHEAD
    return footprint


def budgets(ram: int, devices: Sequence[Device], gpu_fraction: float) -> dict[str, int]:
    """What loaded models may use together: `ram` bytes of RAM, and `gpu_fraction` of each GPU's memory."""
    out = {RAM: ram}
    for device in devices:
        out[gpu(device.index)] = int(device.total_bytes * gpu_fraction)
    return out


def first_excess(used: Footprint, limits: Mapping[str, int]) -> str | None:
    """The first resource `used` takes more of than `limits` allow, said in words; None when everything fits."""
    for resource, amount in sorted(used.items()):
        limit = limits.get(resource, 0)
        if amount > limit:
            what = "RAM" if resource == RAM else f"GPU {resource.removeprefix('gpu')}'s memory"
            return f"{_mib(amount)} of {what}, and the budget is {_mib(limit)}"
    return None


def _mib(count: int) -> str:
    return f"{count / 1024**2:,.0f} MiB"


def combined(footprints: Sequence[Footprint]) -> dict[str, int]:
    out: dict[str, int] = {}
    for footprint in footprints:
        for resource, amount in footprint.items():
            out[resource] = out.get(resource, 0) + amount
    return out
