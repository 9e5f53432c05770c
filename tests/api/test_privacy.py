"""`privacy: strict`: no per-request log lines, no prompt or completion text, no tracebacks, and never a client's
address or user agent; counts, statuses and latencies are still recorded. Each point is checked against the
standard mode too, so that a check that could not fail would show."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from somner.cli import app
from somner.models.backends.worker import WorkerBackend
from somner.models.registry import ModelRegistry
from somner.observability.logfiles import RotatingFile, files_of
from somner.observability.logging import LogFormat, configure_logging
from somner.services import Paths, backend_factory
from somner.settings import Settings
from somner.store.usage import UsageRecord
from tests.api.conftest import running
from tests.conftest import link_model
from tests.fakes.backends import FakeFarm

SECRET = "zebra-quartz-secret"
AGENT = "SecretAgent/7.7 (privacy-probe)"
ADDRESS = "203.0.113.77"
PROBE_HEADERS = {"user-agent": AGENT, "x-forwarded-for": ADDRESS, "x-real-ip": ADDRESS}

pytestmark = pytest.mark.anyio


def chat(text: str) -> dict[str, Any]:
    return {"model": "alpha", "messages": [{"role": "user", "content": text}]}


async def exchange(tmp_path: Path, farm: FakeFarm, **settings: Any) -> list[UsageRecord]:
    """Three requests (a chat, a stream, one refused with a 400), then the usage rows they left."""
    async with running(tmp_path, farm, **settings) as (services, client):
        assert (await client.post("/v1/chat/completions", json=chat(SECRET), headers=PROBE_HEADERS)).status_code == 200
        streamed = await client.post(
            "/api/chat", json={**chat(SECRET), "stream": True}, headers=PROBE_HEADERS
        )  # Ollama
        assert streamed.status_code == 200
        refused = await client.post("/v1/chat/completions", json={"model": "alpha"}, headers=PROBE_HEADERS)
        assert refused.status_code == 400
        await services.recorder.flush()
        return [r for r in await services.usage.all() if r.model == "alpha"]


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "somner.requests"]


async def test_strict_writes_no_request_lines_but_keeps_counts_and_latencies(
    tmp_path: Path, farm: FakeFarm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    records = await exchange(tmp_path / "standard", farm)
    assert len(request_lines(caplog)) >= 3  # the standard mode logs each request
    caplog.clear()
    strict = await exchange(tmp_path / "strict", farm, privacy="strict")
    assert request_lines(caplog) == []
    assert len(strict) == len(records) == 2  # (the 400 was refused before admission: no usage row either way)
    for row in strict:
        assert row.status == 200 and row.prompt_tokens > 0 and row.completion_tokens > 0
        assert row.latency_ms > 0 and row.ttft_ms is not None and row.route and row.dialect


async def test_strict_stores_no_prompt_text_even_with_log_requests(tmp_path: Path, farm: FakeFarm) -> None:
    standard = await exchange(tmp_path / "standard", farm, log_requests=True)
    assert all(SECRET in (r.prompt_text or "") and r.completion_text for r in standard)
    strict = await exchange(tmp_path / "strict", farm, log_requests=True, privacy="strict")
    assert strict and all(r.prompt_text is None and r.completion_text is None for r in strict)


@pytest.mark.parametrize("privacy", ["standard", "strict"])
async def test_client_addresses_and_user_agents_are_never_recorded(
    tmp_path: Path, farm: FakeFarm, caplog: pytest.LogCaptureFixture, privacy: str
) -> None:
    caplog.set_level(logging.DEBUG)
    rows = await exchange(tmp_path, farm, privacy=privacy)
    assert rows
    stored = orjson.dumps([r.row() for r in rows], default=str).decode()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for probe in (AGENT, "SecretAgent", ADDRESS):
        assert probe not in stored and probe not in logged
    if privacy == "strict":
        assert SECRET not in logged


async def test_the_live_request_feed_is_silent_in_strict_mode(tmp_path: Path, farm: FakeFarm) -> None:
    for privacy, expect_lines in (("standard", True), ("strict", False)):
        async with running(tmp_path / privacy, farm, privacy=privacy) as (services, client):
            seen: list[dict[str, Any]] = []
            original = services.request_feed.publish
            services.request_feed.publish = seen.append  # type: ignore[method-assign,assignment]
            try:
                assert (await client.post("/v1/chat/completions", json=chat("hi"))).status_code == 200
            finally:
                services.request_feed.publish = original  # type: ignore[method-assign]
            assert bool(seen) is expect_lines


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_strict_logs_name_the_exception_but_carry_no_traceback(
    tmp_path: Path, farm: FakeFarm, log_format: LogFormat
) -> None:
    for privacy in ("standard", "strict"):
        files = RotatingFile(tmp_path / privacy / "logs", "server")
        files.open()
        configure_logging("info", log_format=log_format, files=files, to_stderr=False, tracebacks=privacy == "standard")
        async with running(tmp_path / privacy, farm, privacy=privacy) as (_services, client):
            reply = await client.post("/v1/chat/completions", json=chat("BOOM " + SECRET))
            assert reply.status_code == 500 and "secret internal detail" not in reply.text
        logging.getLogger().handlers.clear()
        files.close()
        text = "".join(p.read_text() for p in files_of(files.directory, "server"))
        assert "unhandled error in POST /v1/chat/completions" in text
        if privacy == "standard":
            assert "Traceback" in text and "secret internal detail" in text
        else:
            assert "Traceback" not in text and "secret internal detail" not in text, text
            assert "(RuntimeError)" in text
            assert SECRET not in text


def test_the_setting_is_typed_and_documented() -> None:
    assert Settings().privacy == "standard" and not Settings().records_prompts
    assert Settings(privacy="strict", log_requests=True).records_prompts is False
    assert Settings(log_requests=True).records_prompts is True
    with pytest.raises(ValueError, match="privacy"):
        Settings(privacy="paranoid")  # type: ignore[arg-type]
    description = Settings.model_fields["privacy"].description or ""
    assert "user agents" in description and "tracebacks" in description


def test_strict_engines_are_told_to_log_no_tracebacks(tmp_path: Path, model_path: Path) -> None:
    link_model(model_path, tmp_path / "models")
    paths = Paths(tmp_path, tmp_path / "models", tmp_path, tmp_path, tmp_path, tmp_path, tmp_path)
    for privacy, flagged in (("standard", False), ("strict", True)):
        settings = Settings(data_dir=tmp_path, privacy=privacy)  # type: ignore[arg-type]
        spec = ModelRegistry(settings, tmp_path / "models").get(model_path.stem)
        backend = backend_factory(settings, paths)(spec)
        assert isinstance(backend, WorkerBackend)
        assert ("--no-tracebacks" in backend.command()) is flagged
    help_text = CliRunner().invoke(app, ["worker", "--help"]).output
    assert "--no-tracebacks" in help_text
