"""The gateway app in process (httpx's ASGI transport) over fake backends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from somner.app import create_app
from somner.services import Services, build_services
from somner.settings import Settings
from tests.fakes.backends import FakeFarm

ADMIN_KEY = "sk-somner-test-admin-key-0000000000000000000000000"


@pytest.fixture
def farm() -> FakeFarm:
    return FakeFarm()


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, farm: FakeFarm, database_url: str | None = None, **settings: Any
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:  # settings: Settings fields, as plain data
    """Services (started) and an admin client for an app over fake backends `alpha` and `beta`."""
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True, exist_ok=True)
    for name in ("alpha", "beta"):
        (models / f"{name}.gguf").write_bytes(b"GGUF")
    options: dict[str, Any] = {"data_dir": tmp_path / "data", "max_request_bytes": 64 * 1024, **settings}
    options.setdefault("auth", {})
    options["auth"] = {"admin_key": ADMIN_KEY, **options["auth"]}
    if database_url is not None:
        options["database"] = {"url": database_url}
    config = Settings(**options)
    services = build_services(config, factory=farm.factory)
    await services.start()
    try:
        app = create_app(config, services=services)
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as http:
            yield services, http
    finally:
        await services.stop()


@pytest.fixture
async def services_and_client(tmp_path: Path, farm: FakeFarm) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    async with running(tmp_path, farm) as pair:
        yield pair


@pytest.fixture
def services(services_and_client: tuple[Services, httpx.AsyncClient]) -> Services:
    return services_and_client[0]


@pytest.fixture
def client(services_and_client: tuple[Services, httpx.AsyncClient]) -> httpx.AsyncClient:
    """A client with the admin key."""
    return services_and_client[1]
