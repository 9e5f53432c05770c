"""`GET /admin/models/{id}` (fake backends): one model's state, served context and configuration entry, with
its secrets masked (what `somner show` prints about serving)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import running
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

MODELS = [
    {"id": "remote", "urls": ["http://upstream.test"], "api_key": "sk-upstream-secret", "aliases": ["far"]},
    {
        "id": "proc",
        "command": "engine --port {port}",
        "health_url": "http://127.0.0.1:{port}/health",
        "env": {"TOKEN": "env-secret"},
        "ctx": 2048,
    },
]


async def test_one_model_in_detail(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, models=MODELS) as (_, client):
        alpha = (await client.get("/admin/models/alpha")).json()
        assert (alpha["id"], alpha["state"], alpha["backend"], alpha["source"]) == (
            "alpha",
            "unloaded",
            "worker",
            "directory",
        )
        assert alpha["context_length"] == 4096 and alpha["parallel"] >= 1
        assert alpha["entry"] == {"id": "alpha", "path": str(tmp_path / "data" / "models" / "alpha.gguf")}
        await client.post("/admin/models/alpha/load")
        assert (await client.get("/admin/models/alpha")).json()["state"] == "loaded"

        remote = (await client.get("/admin/models/far")).json()  # an alias names the same model
        assert remote["id"] == "remote" and remote["aliases"] == ["far"]
        assert remote["entry"]["api_key"] == "**********"
        proc = (await client.get("/admin/models/proc")).json()
        assert proc["entry"]["env"] == {"TOKEN": "**********"}
        assert proc["context_length"] == 2048
        text = (await client.get("/admin/models/proc")).text + (await client.get("/admin/models/remote")).text
        assert "secret" not in text


async def test_unknown_models_and_wrong_methods(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (_, client):
        missing = await client.get("/admin/models/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        assert (await client.get("/admin/models/alpha/load")).status_code == 405
        assert (await client.get("/admin/models/alpha", headers={"authorization": "Bearer wrong"})).status_code == 401
