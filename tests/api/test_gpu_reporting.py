"""Per-GPU memory, utilization and which model holds what, on /health and /metrics (recorded GPU readings; the
estimates are the manager's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import utils as prometheus_utils

from somner import services as services_module
from somner.models.placement import RAM
from somner.observability import gpu
from tests.api.conftest import running
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

GIB = 1024**3


def number(value: float) -> str:
    """A value as Prometheus's text format writes it."""
    return str(prometheus_utils.floatToGoString(value))  # type: ignore[no-untyped-call]


RECORDED = "0, NVIDIA H100 80GB HBM3, 10240, 81559, 37\n1, NVIDIA H100 80GB HBM3, 512, 81559, 0\n"


async def test_health_and_metrics_say_what_each_gpu_holds(
    tmp_path: Path, farm: FakeFarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu, "read_gpu_memory", lambda: gpu.parse_nvidia_smi(RECORDED))
    monkeypatch.setattr(services_module, "read_gpu_memory", lambda: gpu.parse_nvidia_smi(RECORDED))  # (budgets)
    async with running(tmp_path, farm) as (services, client):
        services.manager._estimate = lambda spec: {RAM: GIB, "gpu0": 6 * GIB} if spec.id == "alpha" else {RAM: GIB}
        assert (await client.post("/v1/completions", json={"model": "alpha", "prompt": "hi"})).status_code == 200
        await client.post("/v1/completions", json={"model": "beta", "prompt": "hi"})
        gpus = (await client.get("/health")).json()["gpus"]
        assert [(g["index"], g["utilization"], g["models"]) for g in gpus] == [
            (0, 0.37, {"alpha": 6 * GIB}),
            (1, 0.0, {}),
        ]
        assert gpus[0]["used_bytes"] == 10240 * 1024**2 and gpus[0]["total_bytes"] == 81559 * 1024**2
        text = (await client.get("/metrics")).text
        assert f'somner_gpu_memory_used_bytes{{gpu="0"}} {number(10240 * 1024**2)}' in text
        assert 'somner_gpu_utilization_ratio{gpu="0"} 0.37' in text
        assert f'somner_model_device_memory_bytes{{device="gpu0",model="alpha"}} {number(6 * GIB)}' in text
        assert 'somner_model_device_memory_bytes{device="ram",model="beta"}' in text


def test_nvidia_smi_rows_with_and_without_utilization() -> None:
    rows = gpu.parse_nvidia_smi("0, A, 1, 100, [N/A]\n1, B, 2, 200\nbroken\n2, C, x, 1, 5\n")
    assert [(r.index, r.utilization) for r in rows] == [(0, None), (1, None)]
