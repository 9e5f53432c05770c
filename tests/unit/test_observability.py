"""Metrics helpers and GPU readings, without a server."""

from __future__ import annotations

import pytest

from somner.errors import (
    BadRequest,
    EngineFailed,
    Forbidden,
    HeadersTooLarge,
    PayloadTooLarge,
    RateLimited,
    SomnerError,
    Unauthorized,
    Unavailable,
)
from somner.observability.gpu import GpuMemory, parse_nvidia_smi
from somner.observability.metrics import Metrics, RequestObservation, rejection_reason


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (Unauthorized("no key"), "auth"),
        (Forbidden("no scope"), "auth"),
        (RateLimited("slow down"), "rate_limit"),
        (RateLimited("used up", code="insufficient_quota"), "quota"),
        (Unavailable("busy", code="queue_full"), "queue_full"),
        (Unavailable("busy", code="queue_timeout"), "queue_full"),
        (PayloadTooLarge("big"), "size"),
        (HeadersTooLarge("big"), "size"),
        (Unavailable("shutting down"), None),
        (BadRequest("bad"), None),
        (EngineFailed("crashed"), None),
    ],
)
def test_rejection_reasons(error: SomnerError, reason: str | None) -> None:
    assert rejection_reason(error) == reason


def test_nvidia_smi_rows() -> None:
    text = "0, NVIDIA H100 80GB HBM3, 1024, 81559\n1, NVIDIA H100 80GB HBM3, 0, 81559\ngarbage\n2, x, n/a, 5\n"
    assert parse_nvidia_smi(text) == [
        GpuMemory(0, "NVIDIA H100 80GB HBM3", 1024 * 1024**2, 81559 * 1024**2),
        GpuMemory(1, "NVIDIA H100 80GB HBM3", 0, 81559 * 1024**2),
    ]


def test_registries_are_per_server_and_key_labels_opt_in() -> None:
    a, b = Metrics(), Metrics(per_key=True)
    seen = RequestObservation(route="/r", dialect="openai", model="m", status=200, seconds=0.1, key="k1")
    a.request(seen)
    b.request(seen)
    assert b'somner_requests_total{dialect="openai",model="m",route="/r",status="200"} 1.0' in a.text()
    assert b'key="k1"' in b.text() and b'key="k1"' not in a.text()
    assert Metrics().as_json()["somner_requests"] == []  # a fresh registry: nothing counted elsewhere leaks in
