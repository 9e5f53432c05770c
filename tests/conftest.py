"""Fixtures shared by every test layer: the real default model, free ports, a running `somner serve`."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from somner.models.default_model import ensure_default_model
from tests.pg import PostgresCluster
from tests.servers import ServeProcess, start_serve


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="Longer robustness runs: ten times the generated requests (tests/fuzz), on a random seed.",
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLI commands run in-process configure the root logger; each test gets it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the default model (Gemma 3 270M Q4_K_M), assembled once per session."""
    store = tmp_path_factory.mktemp("model-store")
    ensure_default_model(store)
    return store


@pytest.fixture(scope="session")
def model_path(model_store: Path) -> Path:
    paths = list(model_store.glob("*.gguf"))
    assert len(paths) == 1
    return paths[0]


def link_model(model_path: Path, models_dir: Path, name: str | None = None) -> Path:
    """Put the model into `models_dir` (hard link when possible: the registry refuses symlinks out of it)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / (name or model_path.name)
    try:
        os.link(model_path, target)
    except OSError:
        shutil.copyfile(model_path, target)
    return target


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One `somner serve` for the session, started the way `make run` starts it: empty data directory, so the
    server itself assembles the default model from its package."""
    data_dir = tmp_path_factory.mktemp("serve-data")
    server = start_serve(data_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session; each test that wants one gets its own database in it."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Each test of the gateway area runs on SQLite (the default, None here) and on PostgreSQL."""
    if request.param == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()
