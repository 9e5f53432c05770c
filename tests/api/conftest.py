"""The gateway app in process (httpx's ASGI transport) over fake backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from somner.app import create_app
from somner.services import Services, build_services
from somner.settings import Settings
from tests.fakes.backends import FakeFarm


@pytest.fixture
def farm() -> FakeFarm:
    return FakeFarm()


@pytest.fixture
async def services(tmp_path: Path, farm: FakeFarm) -> AsyncIterator[Services]:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    for name in ("alpha", "beta"):
        (models / f"{name}.gguf").write_bytes(b"GGUF")
    settings = Settings(data_dir=tmp_path / "data", max_request_bytes=64 * 1024)
    built = build_services(settings, factory=farm.factory)
    yield built
    await built.stop()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://somner") as http:
        yield http
