"""`somner serve --model M` starts M's engine before it builds the gateway, and the manager takes that process over
(a cold start's two halves side by side); a server without a default model starts engines as before."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import link_model
from tests.servers import start_serve

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"


def engine_starts(data_dir: Path) -> list[str]:
    """The pid line of every engine start, from the engines' own logs."""
    return [
        line
        for path in sorted((data_dir / "logs").glob("*worker-*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if "somner.cli.worker_cmd: worker" in line and "starting (pid" in line
    ]


@pytest.mark.parametrize("privacy", ["standard", "strict"])
def test_the_default_models_engine_is_started_ahead_and_taken_over(
    tmp_path: Path, model_path: Path, privacy: str
) -> None:
    data_dir = tmp_path / "data"
    link_model(model_path, data_dir / "models")
    server = start_serve(data_dir, "--model", MODEL, env={"SOMNER_PRIVACY": privacy})
    try:
        ahead = re.search(rf"engine for {MODEL} started ahead \(pid (\d+)", server.log())
        assert ahead is not None, server.log()[-2000:]
        assert "starting engine for" not in server.log()
        reply = httpx.post(
            f"{server.url}/v1/completions",
            json={"model": MODEL, "prompt": "Once upon a time", "max_tokens": 3},
            headers=server.headers,
            timeout=120,
        )
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3
        models = httpx.get(f"{server.url}/admin/models", headers=server.headers).json()["data"]
        assert {m["id"]: m["state"] for m in models}[MODEL] == "loaded"
    finally:
        assert server.stop() == 0
    starts = engine_starts(data_dir)
    assert len(starts) == 1 and f"(pid {ahead.group(1)})" in starts[0], starts  # one engine: the one started ahead
    assert "stopped" in server.log()


def test_without_a_default_model_engines_start_on_demand(tmp_path: Path, model_path: Path) -> None:
    data_dir = tmp_path / "data"
    link_model(model_path, data_dir / "models")
    server = start_serve(data_dir)
    try:
        assert engine_starts(data_dir) == []
        reply = httpx.post(
            f"{server.url}/v1/completions",
            json={"model": MODEL, "prompt": "Once", "max_tokens": 2},
            headers=server.headers,
            timeout=120,
        )
        assert reply.status_code == 200
    finally:
        assert server.stop() == 0
    assert "started ahead" not in server.log() and "starting engine for" in server.log()
    assert len(engine_starts(data_dir)) == 1
