"""GPU options in the configuration: `somner config check` accepts them, refuses what this machine's GPUs cannot
honour (tensor_split longer than the GPU count, a main_gpu that does not exist) and impossible combinations, and a
machine without GPUs accepts the same configuration (its models run on the CPU); the worker gets the flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from somner import services
from somner.cli import app
from somner.models.backends.worker_command import worker_command
from somner.models.registry import ModelConfigError, ModelRegistry
from somner.observability.gpu import GpuMemory
from somner.settings import Settings
from tests.fakes.gguf_files import make_gguf

runner = CliRunner()
GIB = 1024**3
TWO_GPUS = [GpuMemory(index=i, name="H100", used_bytes=0, total_bytes=80 * GIB) for i in range(2)]

GPU_CONFIG = """
engine:
  gpu_layers: -1
  split_mode: row
  flash_attn: "on"
models:
  - id: big
    path: {path}
    tensor_split: [3, 1]
    cache_type_k: q8_0
    cache_type_v: Q4
    main_gpu: 1
"""


def write_config(tmp_path: Path, text: str) -> Path:
    model = tmp_path / "big.gguf"
    model.write_bytes(make_gguf([4]))
    path = tmp_path / "gpu.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n" + text.format(path=model))
    return path


def test_check_accepts_gpu_options_on_a_machine_with_the_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "read_gpu_memory", lambda: TWO_GPUS)
    result = runner.invoke(app, ["config", "check", "--config", str(write_config(tmp_path, GPU_CONFIG))])
    assert result.exit_code == 0, result.output
    assert "configuration is valid (2 GPUs)" in result.output


def test_a_cpu_only_machine_accepts_the_same_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "read_gpu_memory", list)
    result = runner.invoke(app, ["config", "check", "--config", str(write_config(tmp_path, GPU_CONFIG))])
    assert result.exit_code == 0, result.output
    assert "no GPU: models run on the CPU" in result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("tensor_split: [3, 1]", "tensor_split has 3 shares, and this machine has 2 GPUs"),
        ("main_gpu: 1", "main_gpu 2 does not exist"),
    ],
)
def test_check_refuses_what_the_gpus_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, message: str
) -> None:
    monkeypatch.setattr(services, "read_gpu_memory", lambda: TWO_GPUS)
    bad = GPU_CONFIG.replace(
        change, {"tensor_split": "tensor_split: [1, 1, 1]", "main_gpu": "main_gpu: 2"}[change.split(":", maxsplit=1)[0]]
    )
    result = runner.invoke(app, ["config", "check", "--config", str(write_config(tmp_path, bad))])
    assert result.exit_code == 1 and message in result.output, result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("engine:\n  split_mode: columns\n", "split_mode"),
        ("engine:\n  flash_attn: maybe\n", "flash_attn"),
        ("engine:\n  tensor_split: [-1, 2]\n", "tensor_split"),
        ("models:\n  - id: big\n    path: {path}\n    cache_type: q5_1\n", "cache_type"),
        ("models:\n  - id: big\n    path: {path}\n    cache_type_v: q8_0\n    flash_attn: 'off'\n", "needs flash_attn"),
    ],
)
def test_check_refuses_impossible_values(tmp_path: Path, text: str, message: str) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(write_config(tmp_path, text))])
    assert result.exit_code == 1 and message in result.output, result.output


def test_the_worker_gets_the_gpu_flags(tmp_path: Path) -> None:
    model = tmp_path / "big.gguf"
    model.write_bytes(make_gguf([4]))
    settings = Settings.model_validate(
        {
            "engine": {"split_mode": "row", "flash_attn": "on", "tensor_split": [1, 1]},
            "models": [
                {"id": "big", "path": str(model), "cache_type_k": "q8_0", "cache_type_v": "q4_0", "main_gpu": 1}
            ],
        }
    )
    spec = ModelRegistry(settings, tmp_path).get("big")
    command = " ".join(worker_command(spec, tmp_path / "w.sock"))
    for flag in ("--split-mode row", "--flash-attn on", "--tensor-split 1.0,1.0", "--main-gpu 1"):
        assert flag in command
    assert "--cache-type-k q8_0 --cache-type-v q4_0" in command
    plain = ModelRegistry(Settings(), tmp_path).get("big")
    assert "--split-mode" not in " ".join(worker_command(plain, tmp_path / "w.sock"))


def test_a_served_config_that_the_gpus_cannot_honour_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "read_gpu_memory", lambda: TWO_GPUS)
    model = tmp_path / "big.gguf"
    model.write_bytes(make_gguf([4]))
    settings = Settings.model_validate(
        {"data_dir": str(tmp_path / "data"), "models": [{"id": "big", "path": str(model), "tensor_split": [1, 1, 1]}]}
    )
    with pytest.raises(ModelConfigError, match="tensor_split has 3 shares"):
        services.build_services(settings)
