"""`somner start|stop|restart|status` state handling, with stand-in processes instead of a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somner.cli import app
from somner.cli.daemon_cmd import (
    PID_FILE,
    DaemonRecord,
    ServeOptions,
    local_url,
    process_alive,
    read_record,
    running_pid,
    write_state,
)

runner = CliRunner()

# A stand-in for `somner serve`: its command line names "somner" and "serve", as a real server's does.
_SLEEPER = "import signal, sys, time\n{setup}\nopen(sys.argv[1], 'w').close()\ntime.sleep(60)\n"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SOMNER_"):
            monkeypatch.delenv(key)


def stand_in(tmp_path: Path, *, ignore_sigterm: bool = False) -> subprocess.Popen[bytes]:
    marker = tmp_path / f"up-{time.monotonic_ns()}"
    setup = "signal.signal(signal.SIGTERM, signal.SIG_IGN)" if ignore_sigterm else ""
    process = subprocess.Popen(
        [sys.executable, "-c", _SLEEPER.format(setup=setup), str(marker), "somner", "serve"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.01)
    return process


@pytest.fixture
def server(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = stand_in(tmp_path)
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def record_for(pid: int, port: int = 8000) -> DaemonRecord:
    return DaemonRecord(pid=pid, host="127.0.0.1", port=port, started_at=time.time() - 65, options=ServeOptions())


def test_no_pid_file_means_not_running(tmp_path: Path) -> None:
    assert running_pid(tmp_path) is None


def test_a_pid_file_of_a_dead_process_is_stale_and_removed(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    (tmp_path / PID_FILE).write_text(done.stdout.decode())
    assert running_pid(tmp_path) is None
    assert not (tmp_path / PID_FILE).exists()


def test_an_unreadable_pid_file_is_stale(tmp_path: Path) -> None:
    (tmp_path / PID_FILE).write_text("not a pid\n")
    assert running_pid(tmp_path) is None
    assert not (tmp_path / PID_FILE).exists()


def test_a_reused_pid_that_is_not_a_somner_server_is_stale(tmp_path: Path) -> None:
    (tmp_path / PID_FILE).write_text(f"{os.getpid()}\n")  # alive, but this test runner is no `somner serve`
    assert running_pid(tmp_path) is None
    assert not (tmp_path / PID_FILE).exists()


def test_a_live_server_is_running(tmp_path: Path, server: subprocess.Popen[bytes]) -> None:
    record = record_for(server.pid)
    write_state(tmp_path, record)
    assert running_pid(tmp_path) == server.pid
    assert read_record(tmp_path) == record


def test_a_zombie_counts_as_gone(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while process_alive(process.pid):  # exited but not reaped: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process.wait() == 0


def test_the_options_round_trip_through_the_state_file(tmp_path: Path) -> None:
    options = ServeOptions(config="/etc/somner.yaml", port=9000, data_dir=str(tmp_path), auth_off_anywhere=True)
    write_state(tmp_path, DaemonRecord(pid=1, host="0.0.0.0", port=9000, started_at=1.0, options=options))
    record = read_record(tmp_path)
    assert record is not None
    assert record.options == options
    assert record.url == "http://127.0.0.1:9000"
    assert options.argv() == [
        "--config",
        "/etc/somner.yaml",
        "--port",
        "9000",
        "--data-dir",
        str(tmp_path),
        "--i-know-auth-is-off",
    ]
    assert local_url("::", 1) == "http://[::1]:1"


def test_status_and_stop_when_nothing_runs(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "not running" in result.output
    result = runner.invoke(app, ["stop", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "not running" in result.output


def test_restart_needs_an_earlier_start(tmp_path: Path) -> None:
    result = runner.invoke(app, ["restart", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "somner start" in result.output


def test_start_refuses_a_second_server_on_the_same_data_dir(tmp_path: Path, server: subprocess.Popen[bytes]) -> None:
    write_state(tmp_path, record_for(server.pid, port=8123))
    result = runner.invoke(app, ["start", "--data-dir", str(tmp_path), "--port", "8124"])
    assert result.exit_code == 1
    assert f"already running on {tmp_path} (pid {server.pid} at http://127.0.0.1:8123)" in result.output
    assert server.poll() is None


def test_stop_sends_sigterm_and_removes_the_pid_file(tmp_path: Path, server: subprocess.Popen[bytes]) -> None:
    write_state(tmp_path, record_for(server.pid))
    result = runner.invoke(app, ["stop", "--data-dir", str(tmp_path), "--timeout", "10"])
    assert result.exit_code == 0, result.output
    assert server.wait(5) == -signal.SIGTERM
    assert not (tmp_path / PID_FILE).exists()
    assert read_record(tmp_path) is not None  # kept for restart


def test_stop_kills_a_server_that_does_not_drain_in_time(tmp_path: Path) -> None:
    process = stand_in(tmp_path, ignore_sigterm=True)
    try:
        write_state(tmp_path, record_for(process.pid))
        result = runner.invoke(app, ["stop", "--data-dir", str(tmp_path), "--timeout", "0.5"])
        assert result.exit_code == 0, result.output
        assert "killed" in result.output
        assert process.wait(5) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ok", "uptime_s": 3725.0, "loaded_models": ["alpha", "beta"]}'
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_status_shows_pid_address_uptime_and_models(tmp_path: Path, server: subprocess.Popen[bytes]) -> None:
    http = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        port = http.server_address[1]
        write_state(tmp_path, record_for(server.pid, port=int(port)))
        result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    finally:
        http.shutdown()
        http.server_close()
        thread.join()
    assert result.exit_code == 0, result.output
    assert f"running (pid {server.pid})" in result.output
    assert f"http://127.0.0.1:{port}" in result.output
    assert "1h 2m 5s" in result.output
    assert "alpha, beta" in result.output
