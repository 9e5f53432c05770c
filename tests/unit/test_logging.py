"""Log files: timestamped names, rotation by size, retention per kind, JSON lines, engine output copies."""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import re
import sys
import time
from pathlib import Path

import pytest

from somner.models.backends.worker import log_tail
from somner.observability.engine_output import copy_output
from somner.observability.logfiles import RotatingFile, files_of, new_path, prune, stamp, tail
from somner.observability.logging import (
    JsonFormatter,
    close_log_files,
    configure_logging,
    configure_server_logging,
)

T0 = calendar.timegm((2026, 11, 23, 10, 15, 0, 0, 0, 0))


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_names_start_with_a_sortable_utc_timestamp(tmp_path: Path) -> None:
    assert stamp(T0) == "20261123T101500Z"
    assert new_path(tmp_path, "server", T0 + 0.9).name == "20261123T101500Z-server.log"


def test_a_new_file_begins_past_max_bytes_and_lines_stay_whole(tmp_path: Path) -> None:
    clock = Clock()
    files = RotatingFile(tmp_path, "server", max_bytes=100, keep=5, clock=clock)
    line = b"x" * 39 + b"\n"  # 40 bytes: two fit in 100, the third begins a new file
    for _ in range(5):
        files.write(line)
        clock.now += 10
    files.close()
    written = files_of(tmp_path, "server")
    assert [p.stat().st_size for p in written] == [80, 80, 40]
    assert [p.name for p in written] == sorted(p.name for p in written)
    assert written[0].name == "20261123T101500Z-server.log"
    assert written[1].name == "20261123T101520Z-server.log"  # begun by the third write, 20 s later


def test_a_write_larger_than_max_bytes_goes_whole_into_one_file(tmp_path: Path) -> None:
    files = RotatingFile(tmp_path, "server", max_bytes=10, keep=5, clock=Clock())
    files.write(b"a" * 25)
    files.write(b"b" * 3)
    files.close()
    assert [p.read_bytes() for p in files_of(tmp_path, "server")] == [b"a" * 25, b"b" * 3]


def test_files_begun_within_one_second_still_sort_in_creation_order(tmp_path: Path) -> None:
    files = RotatingFile(tmp_path, "server", max_bytes=1, keep=10, clock=Clock())
    for index in range(3):
        files.write(str(index).encode())
    files.close()
    written = files_of(tmp_path, "server")
    assert [p.read_text() for p in written] == ["0", "1", "2"]
    assert [p.name[:16] for p in written] == ["20261123T101500Z", "20261123T101501Z", "20261123T101502Z"]


def test_only_the_newest_files_of_the_same_kind_are_kept(tmp_path: Path) -> None:
    clock = Clock()
    other_kinds = [
        tmp_path / "20200101T000000Z-worker-a.log",
        tmp_path / "20200101T000000Z-x-worker-a.log",  # a different model whose id ends like this one
        tmp_path / "notes.log",
    ]
    for path in other_kinds:
        path.write_text("keep me")
    files = RotatingFile(tmp_path, "x", max_bytes=1, keep=2, clock=clock)
    for index in range(5):
        files.write(str(index).encode())
        clock.now += 60
    files.close()
    assert [p.read_text() for p in files_of(tmp_path, "x")] == ["3", "4"]
    assert all(p.exists() for p in other_kinds)
    assert prune(tmp_path, "worker-a", keep=1) == []


def test_every_start_of_an_engine_begins_its_own_file(tmp_path: Path) -> None:
    clock = Clock()
    files = RotatingFile(tmp_path, "worker-m", keep=3, clock=clock)
    for _ in range(4):
        path = files.open()
        files.write(b"started\n")
        files.close()
        clock.now += 1
    assert path == files.path
    assert len(files_of(tmp_path, "worker-m")) == 3
    assert files_of(tmp_path, "worker-m")[-1] == path


def test_the_tail_spans_a_rotation(tmp_path: Path) -> None:
    files = RotatingFile(tmp_path, "worker-m", max_bytes=6, keep=5, clock=Clock())
    for word in (b"one\n", b"two\n", b"three\n"):
        files.write(word)
    files.close()
    assert tail(files_of(tmp_path, "worker-m"), 10) == "two\nthree\n"
    assert log_tail(files, limit=1000) == "two\nthree\n"  # the current file and the one before


def test_json_lines_carry_the_base_keys_the_extras_and_the_traceback() -> None:
    logger = logging.getLogger("somner.requests")
    record = logger.makeRecord(
        "somner.requests",
        logging.INFO,
        __file__,
        1,
        "GET %s %d",
        ("/v1/models", 200),
        None,
        extra={"request_id": "abc", "status": 200, "latency_ms": 1.5, "level": "not me"},
    )
    line = JsonFormatter().format(record)
    body = json.loads(line)
    assert "\n" not in line
    assert body["message"] == "GET /v1/models 200"
    assert body["level"] == "INFO"
    assert body["logger"] == "somner.requests"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["ts"])
    assert (body["request_id"], body["status"], body["latency_ms"]) == ("abc", 200, 1.5)
    assert "args" not in body and "msg" not in body
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logger.makeRecord("x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info())
    failure = json.loads(JsonFormatter().format(failed))
    assert "Traceback" in failure["exception"] and "ValueError: boom" in failure["exception"]


def test_server_logging_writes_the_file_in_the_chosen_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = configure_server_logging("info", tmp_path, log_format="json", to_stderr=False)
    try:
        logging.getLogger("somner.test").info("hello %s", "there", extra={"model": "m"})
        logging.getLogger("somner.test").debug("not at info")
    finally:
        close_log_files()
    assert files.path is not None
    assert re.fullmatch(r"\d{8}T\d{6}Z-server\.log", files.path.name)
    lines = [json.loads(line) for line in files.path.read_text().splitlines()]
    assert [(line["message"], line["model"]) for line in lines] == [("hello there", "m")]
    assert capsys.readouterr().err == ""
    assert not any(type(h).__name__ == "RotatingFileHandler" for h in logging.getLogger().handlers)


def test_configuring_again_closes_the_previous_file(tmp_path: Path) -> None:
    first = configure_server_logging("info", tmp_path / "a")
    configure_logging("info")
    logging.getLogger("somner.test").info("after")
    assert first.path is not None
    assert "after" not in first.path.read_text()
    assert first._handle is None  # closed, no file left open


def test_engine_output_is_copied_line_by_line_into_rotating_files(tmp_path: Path) -> None:
    files = RotatingFile(tmp_path, "worker-m", max_bytes=12, keep=5, clock=Clock())

    async def run() -> None:
        stream = asyncio.StreamReader()
        stream.feed_data(b"first line\nsec")
        stream.feed_data(b"ond line\nno newline at end")
        stream.feed_eof()
        await copy_output(stream, files)

    asyncio.run(run())
    contents = [p.read_text() for p in files_of(tmp_path, "worker-m")]
    assert "".join(contents) == "first line\nsecond line\nno newline at end"
    assert all(text.endswith("\n") for text in contents[:-1])  # a rotation never cut a line
    assert files._handle is None


def test_timestamps_are_utc(tmp_path: Path) -> None:
    now = time.time()
    path = new_path(tmp_path, "server", now)
    assert path.name.startswith(time.strftime("%Y%m%dT%H", time.gmtime(now)))
