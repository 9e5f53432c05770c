"""A live `somner serve` on the real default model for the generated-request suites, tuned so that a request the
generators get right costs little: a short context, at most 8 output tokens (4 when a request names none), and a
256 KiB body limit (huge strings are refused at the door, not tokenized), and one engine thread."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import link_model
from tests.fuzz.budget import FUZZ_MODEL, LONG_FACTOR, PER_DIALECT, long_mode
from tests.fuzz.tally import Report
from tests.servers import ServeProcess, start_serve

REPORT = pytest.StashKey[Report]()


@pytest.fixture(scope="session")
def fuzz_report(request: pytest.FixtureRequest) -> Report:
    return request.config.stash.setdefault(REPORT, Report())


@pytest.fixture(scope="session")
def fuzz_count(request: pytest.FixtureRequest) -> int:
    """Generated requests per dialect and suite: PER_DIALECT, or ten times that with `--long`."""
    return PER_DIALECT * LONG_FACTOR if long_mode(bool(request.config.getoption("--long"))) else PER_DIALECT


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--long` runs take as long as they take: no per-test timeout for them."""
    if long_mode(bool(config.getoption("--long"))):
        for item in items:
            if "tests/fuzz/" in item.nodeid:
                item.add_marker(pytest.mark.timeout(0))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    report = config.stash.get(REPORT, None)
    if report is None or not report.tallies:
        return
    terminalreporter.section("generated requests (suite, dialect, count, status histogram)")
    for line in report.lines():
        terminalreporter.write_line(line)
    # CPU time, to judge the wall time on an idle machine from a run on a busy one (children: the servers).
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    terminalreporter.write_line(
        f"cpu seconds: tests {own.ru_utime + own.ru_stime:.1f}, "
        f"server processes {children.ru_utime + children.ru_stime:.1f}"
    )
    report.write()


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    path = link_model(model_path, data_dir / "files")
    config = data_dir / "config.yaml"
    config.write_bytes(
        orjson.dumps(
            {
                "models": [{"id": FUZZ_MODEL, "path": str(path), "pinned": True, "defaults": {"max_tokens": 4}}],
                "preload": [FUZZ_MODEL],
                # One thread: for prompts of a few tokens, llama.cpp's second thread spins more than it helps
                # (measured: 71 ms of CPU per 2-token answer instead of 450 on a busy 2-core machine).
                "engine": {"ctx": 256, "parallel": 2, "threads": 1},
                "limits": {"max_tokens": 8, "header_timeout": 5, "body_timeout": 5, "queue_timeout": 20},
                "max_request_bytes": 256 * 1024,
                "database": {"batch_interval": 0.2},
                "log_level": "warning",  # (thousands of refusals: their log lines are not what is tested)
            }
        )
    )
    server = start_serve(data_dir, "--config", str(config), ready_timeout=120)
    try:
        yield server
    finally:
        server.stop()
