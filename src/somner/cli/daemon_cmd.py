"""`somner start|stop|restart|status`: `somner serve` as a background process, one per data directory.

State lives in the data directory (found as `serve` finds it: --data-dir, the configuration, SOMNER_DATA_DIR,
...):
- `somner.pid`: the pid of the running server. Present while one runs; a pid file whose process is gone, or is
  no longer a Somner server (the pid was reused), is stale and removed by whoever notices.
- `somner.json`: the last start (pid, host, port, started_at, the serve options), kept after stop, so `restart`
  starts the server again the way it was started.
- `logs/<UTC timestamp>-console.log`: what the server printed outside logging (early errors, crashes); its
  log lines go to `logs/<UTC timestamp>-server.log`.

Exit codes follow LSB init scripts: `status` exits 0 when running and 3 when not; `stop` exits 1 when nothing
runs; `start` exits 1 when a server already runs on the data directory or the new one fails to become ready.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer

from somner.cli.common import load_or_exit
from somner.cli.progress import step
from somner.cli.serve_cmd import (
    AuthOffOption,
    ConfigOption,
    DataDirOption,
    HealthPortOption,
    HostOption,
    LogLevelOption,
    ModelOption,
    ModelsDirOption,
    PortOption,
    WorkersOption,
)
from somner.observability.logfiles import RotatingFile, files_of, stamp, tail
from somner.settings import Settings, resolve_data_dir

PID_FILE = "somner.pid"
STATE_FILE = "somner.json"
LOCK_FILE = ".somner.lock"
CONSOLE_LOG = "console"
EXIT_NOT_RUNNING = 3  # LSB: "program is not running"
_POLL = 0.2
_TAIL_BYTES = 3000


# -- the state in the data directory -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The `somner serve` options a start was given: stored in somner.json so `restart` can give them again."""

    config: str | None = None
    host: str | None = None
    port: int | None = None
    data_dir: str | None = None
    models_dir: str | None = None
    model: str | None = None
    log_level: str | None = None
    health_port: int | None = None
    workers: int | None = None
    auth_off_anywhere: bool = False

    def settings_layer(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "data_dir": Path(self.data_dir) if self.data_dir else None,
            "models_dir": Path(self.models_dir) if self.models_dir else None,
            "model": self.model,
            "log_level": self.log_level,
            "health_port": self.health_port,
            "workers": self.workers,
        }

    def argv(self) -> list[str]:
        """The options as `somner serve` arguments."""
        args: list[str] = []
        for flag, value in (
            ("--config", self.config),
            ("--host", self.host),
            ("--port", self.port),
            ("--data-dir", self.data_dir),
            ("--models-dir", self.models_dir),
            ("--model", self.model),
            ("--log-level", self.log_level),
            ("--health-port", self.health_port),
            ("--workers", self.workers),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.auth_off_anywhere:
            args.append("--i-know-auth-is-off")
        return args

    @classmethod
    def from_json(cls, data: object) -> ServeOptions:
        if not isinstance(data, dict):
            raise ValueError("options are not a mapping")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class DaemonRecord:
    """What somner.json holds about the last start."""

    pid: int
    host: str
    port: int
    started_at: float
    options: ServeOptions = field(default_factory=ServeOptions)

    @property
    def url(self) -> str:
        return local_url(self.host, self.port)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DaemonRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a mapping")
        return cls(
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            started_at=float(data["started_at"]),
            options=ServeOptions.from_json(data.get("options", {})),
        )


def local_url(host: str, port: int) -> str:
    """Where this machine reaches a server listening on `host` (the wildcard addresses map to loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104 - mapping
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PID_FILE).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def read_record(data_dir: Path) -> DaemonRecord | None:
    try:
        return DaemonRecord.from_json((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def write_state(data_dir: Path, record: DaemonRecord) -> None:
    _write_atomically(data_dir / STATE_FILE, record.to_json())
    _write_atomically(data_dir / PID_FILE, f"{record.pid}\n")


def remove_pid_file(data_dir: Path, pid: int) -> None:
    """Remove the pid file if it still names `pid` (a newer start may have replaced it)."""
    if read_pid(data_dir) == pid:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / PID_FILE).unlink()


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True  # no procfs: trust the signal check
    state = stat.rpartition(")")[2].split()
    return not state or state[0] not in ("Z", "X")


def is_somner_server(pid: int) -> bool:
    """Whether `pid` is alive and (where procfs tells) runs `somner serve`, not a process that reused the pid."""
    if not process_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return b"somner" in b" ".join(argv) and b"serve" in argv


def running_pid(data_dir: Path) -> int | None:
    """The pid of the server running on `data_dir`, or None; a stale pid file is removed."""
    pid = read_pid(data_dir)
    if pid is None:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / PID_FILE).unlink()  # unreadable: stale by definition
        return None
    if is_somner_server(pid):
        return pid
    remove_pid_file(data_dir, pid)
    return None


@contextlib.contextmanager
def start_lock(data_dir: Path) -> Iterator[None]:
    """Serialises `start`s on one data directory (check, spawn, write the pid file), so two cannot both win."""
    with (data_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


# -- the commands ----------------------------------------------------------------------------------------------


def _settings(options: ServeOptions) -> tuple[Settings, Path]:
    settings = load_or_exit(Path(options.config) if options.config else None, options.settings_layer())
    return settings, resolve_data_dir(settings)


def _absolute(path: Path | None) -> str | None:
    return str(path.expanduser().absolute()) if path is not None else None


def _startup_output(log_dir: Path, since: float, console: Path | None) -> str:
    """The end of what the new server wrote: its log file(s) begun since `since`, then its console output."""
    first = stamp(since)
    server_logs = [p for p in files_of(log_dir, "server") if p.name >= first]
    parts = [tail(server_logs, _TAIL_BYTES)]
    if console is not None:
        parts.append(tail([console], _TAIL_BYTES))
    return "\n".join(part.rstrip() for part in parts if part.strip())


def _ready(url: str, requires_model: bool) -> bool:
    """Whether the new server is ready: `/ready` answers 200 (503 means not yet). With `ready_requires_model`,
    or when `/ready` gives no verdict (404 from a build without it, or 500), `/ping` answering is enough: uvicorn
    opens the port only once the app has started."""
    try:
        if not requires_model:
            status = httpx.get(f"{url}/ready", timeout=2.0).status_code
            if status in (200, 503):
                return status == 200
        return httpx.get(f"{url}/ping", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_process(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to `timeout` for the drain; then SIGKILL the server's process group. True if it drained."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # started by `start` in its own session: take anything it left with it
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 10.0)
    return False


def start_server(
    options: ServeOptions, ready_timeout: float, *, quiet: bool = False, announce_on_stderr: bool = False
) -> DaemonRecord:
    """Start `somner serve` in the background and wait until it is ready; exits 1 (with its log tail) if not.
    `announce_on_stderr` is for commands whose stdout is their own answer (`somner run --serve`)."""
    settings, data_dir = _settings(options)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = data_dir / "logs"
    with start_lock(data_dir):
        pid = running_pid(data_dir)
        if pid is not None:
            record = read_record(data_dir)
            where = f" at {record.url}" if record is not None and record.pid == pid else ""
            typer.echo(f"error: Somner is already running on {data_dir} (pid {pid}{where})", err=True)
            raise typer.Exit(1)
        started_at = time.time()
        console_file = RotatingFile(log_dir, CONSOLE_LOG, keep=settings.log_keep)
        console = console_file.open()
        console_file.close()
        command = [sys.executable, "-m", "somner", "serve", *options.argv()]
        command += ["--no-log-stderr", "--pid-file", str(data_dir / PID_FILE)]
        with console.open("ab") as output:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no terminal: closing the shell does not stop it
            )
        record = DaemonRecord(
            pid=process.pid, host=settings.host, port=settings.port, started_at=started_at, options=options
        )
        write_state(data_dir, record)
    with step(f"starting Somner on {record.url}", quiet=quiet):
        _wait_ready(process, record, data_dir, settings.ready_requires_model, ready_timeout, console)
    typer.echo(f"Somner started (pid {process.pid}) on {record.url}; logs in {log_dir}", err=announce_on_stderr)
    return record


def _wait_ready(
    process: subprocess.Popen[bytes],
    record: DaemonRecord,
    data_dir: Path,
    requires_model: bool,
    ready_timeout: float,
    console: Path,
) -> None:
    log_dir = data_dir / "logs"
    deadline = time.monotonic() + ready_timeout
    while not _ready(record.url, requires_model):
        failure = None
        if process.poll() is not None:
            failure = f"the server exited with status {process.returncode}"
        elif time.monotonic() > deadline:
            failure = f"the server did not become ready within {ready_timeout:g}s"
            _stop_process(process.pid, 10.0)
            process.poll()
        if failure is not None:
            remove_pid_file(data_dir, process.pid)
            typer.echo(f"error: {failure}", err=True)
            output_tail = _startup_output(log_dir, record.started_at, console)
            if output_tail:
                typer.echo(f"--- log tail ({log_dir}) ---\n{output_tail}", err=True)
            raise typer.Exit(1)
        time.sleep(_POLL)


def _stop(data_dir: Path, timeout: float, quiet: bool = False) -> bool:
    """Stop the server on `data_dir`; False if none was running."""
    pid = running_pid(data_dir)
    if pid is None:
        return False
    typer.echo(f"stopping Somner (pid {pid}): requests in flight may take up to {timeout:g}s to finish")
    with step("waiting for requests in flight and engines", quiet=quiet, plain_line=False):
        drained = _stop_process(pid, timeout)
    if not drained:
        typer.echo(f"warning: pid {pid} did not stop within {timeout:g}s and was killed", err=True)
    remove_pid_file(data_dir, pid)
    typer.echo("Somner stopped")
    return True


def _stop_timeout(settings: Settings, given: float | None) -> float:
    # The drain, then each engine's SIGTERM grace, then a margin for flushing usage records.
    return given if given is not None else settings.drain_timeout + settings.engine.stop_timeout + 15.0


TimeoutOption = typer.Option(
    None, "--timeout", min=0.0, help="Seconds to wait for the drain before killing (default: drain_timeout + 45s)."
)
ReadyTimeoutOption = typer.Option(120.0, "--wait", min=1.0, help="Seconds to wait for the server to become ready.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No spinner: plain lines only (as when not on a terminal).")


def start(
    config: Path | None = ConfigOption,
    host: str | None = HostOption,
    port: int | None = PortOption,
    data_dir: Path | None = DataDirOption,
    models_dir: Path | None = ModelsDirOption,
    model: str | None = ModelOption,
    log_level: str | None = LogLevelOption,
    health_port: int | None = HealthPortOption,
    workers: int | None = WorkersOption,
    auth_off_anywhere: bool = AuthOffOption,
    wait: float = ReadyTimeoutOption,
    quiet: bool = QuietOption,
) -> None:
    """Run `somner serve` in the background; return once it is ready (exit 1 with its log tail if it fails)."""
    options = ServeOptions(
        config=_absolute(config),
        host=host,
        port=port,
        data_dir=_absolute(data_dir),
        models_dir=_absolute(models_dir),
        model=model,
        log_level=log_level,
        health_port=health_port,
        workers=workers,
        auth_off_anywhere=auth_off_anywhere,
    )
    start_server(options, wait, quiet=quiet)


def stop(
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    timeout: float | None = TimeoutOption,
    quiet: bool = QuietOption,
) -> None:
    """Stop the background server gracefully: drain requests in flight, flush usage, stop engines."""
    settings, directory = _settings(ServeOptions(config=_absolute(config), data_dir=_absolute(data_dir)))
    if not _stop(directory, _stop_timeout(settings, timeout), quiet):
        typer.echo(f"Somner is not running (data directory {directory})", err=True)
        raise typer.Exit(1)


def restart(
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    timeout: float | None = TimeoutOption,
    wait: float = ReadyTimeoutOption,
    quiet: bool = QuietOption,
) -> None:
    """Stop the background server (if running) and start it again with the options of its last `start`."""
    settings, directory = _settings(ServeOptions(config=_absolute(config), data_dir=_absolute(data_dir)))
    record = read_record(directory)
    if record is None:
        typer.echo(f"error: no earlier `somner start` on {directory}; use `somner start`", err=True)
        raise typer.Exit(1)
    _stop(directory, _stop_timeout(settings, timeout), quiet)
    start_server(record.options, wait, quiet=quiet)


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m"] if minutes or hours or days else []
    return " ".join([*parts, f"{secs}s"])


def status(config: Path | None = ConfigOption, data_dir: Path | None = DataDirOption) -> None:
    """Whether the background server runs: pid, address, uptime, loaded models (exit 0 running, 3 not)."""
    _, directory = _settings(ServeOptions(config=_absolute(config), data_dir=_absolute(data_dir)))
    pid = running_pid(directory)
    if pid is None:
        typer.echo(f"Somner is not running (data directory {directory})")
        raise typer.Exit(EXIT_NOT_RUNNING)
    record = read_record(directory)
    typer.echo(f"Somner is running (pid {pid})")
    typer.echo(f"data:    {directory}")
    if record is None or record.pid != pid:
        typer.echo("address: unknown (no somner.json for this process)")
        return
    typer.echo(f"address: {record.url}")
    try:
        response = httpx.get(f"{record.url}/health", timeout=5.0)
        health = response.json() if response.status_code in (200, 503) else None  # (503: an engine is unwell)
        problem = f"HTTP {response.status_code}"
    except (httpx.HTTPError, ValueError) as exc:
        health, problem = None, f"no answer ({exc.__class__.__name__})"
    if health is None:
        typer.echo(f"uptime:  {_duration(time.time() - record.started_at)}")
        typer.echo(f"health:  {problem}")
        return
    uptime = health.get("uptime_s") if isinstance(health, dict) else None
    typer.echo(f"uptime:  {_duration(uptime if isinstance(uptime, int | float) else time.time() - record.started_at)}")
    loaded = health.get("loaded_models") if isinstance(health, dict) else None
    models = ", ".join(str(m) for m in loaded) if isinstance(loaded, list) and loaded else "none"
    typer.echo(f"models:  {models}")
    unwell = {
        name: model.get("health")
        for name, model in (health.get("models") or {}).items()
        if isinstance(model, dict) and model.get("health") not in (None, "ok")
    }
    if unwell:
        typer.echo("health:  degraded (" + "; ".join(f"{name}: {why}" for name, why in unwell.items()) + ")")
