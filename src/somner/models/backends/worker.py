"""The `worker` backend: a `somner worker` process per model, reached over a unix socket.

Start: spawn the worker with the model's settings, its stdin a pipe (the worker exits when that pipe closes,
so a gateway that dies abruptly leaves no worker behind), its stdout/stderr a pipe the gateway copies into the
model's rotating log file (`<data_dir>/logs/<UTC timestamp>-worker-<model>.log`, a new file per start), then
poll `/health` until it answers, the process exits, or the ready timeout passes.
Stop: SIGTERM, then SIGKILL after the grace period; the process is always reaped (no zombies).
The default model's worker may already be running when the backend starts: `somner serve` gave it a head start
(head_start.py), which the backend adopts when it runs the same command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from somner.errors import ModelLoadFailed
from somner.exits import describe_exit
from somner.models.backends import head_start
from somner.models.backends.http1 import ConnectionPool, Endpoint, HTTPError
from somner.models.backends.openai_http import OpenAIHTTPClient, ServedOverHTTP
from somner.models.backends.worker_command import worker_command
from somner.models.gguf import GGUFError
from somner.models.registry import ModelSpec
from somner.models.vetting import vet_model_file
from somner.observability.engine_output import finish_copy, start_copy
from somner.observability.logfiles import DEFAULT_KEEP, DEFAULT_MAX_BYTES, RotatingFile, files_of, tail
from somner.settings import EngineSettings

log = logging.getLogger(__name__)

_POLL_INTERVAL = 0.05
_LOG_TAIL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class WorkerPaths:
    run_dir: Path  # short, private directory for sockets (unix socket paths are limited to ~100 bytes)
    log_dir: Path
    log_max_bytes: int = DEFAULT_MAX_BYTES  # settings.log_max_bytes
    log_keep: int = DEFAULT_KEEP  # settings.log_keep
    tracebacks: bool = True  # off with `privacy: strict`


def log_tail(files: RotatingFile, limit: int = _LOG_TAIL_BYTES) -> str:
    """The end of the engine's output: its current file, and the one before when the current is short."""
    written = files_of(files.directory, files.kind)
    if files.path is not None and files.path in written:
        written = written[: written.index(files.path) + 1]
    return tail(written[-2:], limit)


class WorkerBackend(ServedOverHTTP):
    def __init__(self, spec: ModelSpec, paths: WorkerPaths, settings: EngineSettings, index: int) -> None:
        self.spec = spec
        self.settings = settings
        self.socket_path = paths.run_dir / f"w{index}.sock"
        self.log = RotatingFile(paths.log_dir, f"worker-{spec.id}", max_bytes=paths.log_max_bytes, keep=paths.log_keep)
        self.tracebacks = paths.tracebacks
        self._process: asyncio.subprocess.Process | head_start.Adopted | None = None
        self._output: asyncio.Task[None] | None = None
        self._client: OpenAIHTTPClient | None = None
        self.load_progress = 0.0  # 0..1 while starting, as the worker reports it; 1.0 once ready

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def log_path(self) -> Path | None:
        """The file this engine's output goes to (None before its first start)."""
        return self.log.path

    def _http(self) -> OpenAIHTTPClient:  # (ServedOverHTTP)
        if self._client is None:
            pool = ConnectionPool(
                Endpoint.unix(str(self.socket_path)), connect_timeout=5.0, read_timeout=self.settings.read_timeout
            )
            self._client = OpenAIHTTPClient(pool, label=f"the engine for {self.spec.id}")
        return self._client

    async def check_model(self) -> None:
        """Refuse (ModelLoadFailed) a model that cannot load, before a process is started for it."""
        path = self.spec.path
        if path is None or not path.is_file():
            raise ModelLoadFailed(f"The model file for '{self.spec.id}' is missing")
        try:
            await asyncio.to_thread(vet_model_file, path)
        except GGUFError as exc:
            raise ModelLoadFailed(f"The model '{self.spec.id}' cannot be loaded: {exc}") from exc

    def command(self) -> list[str]:
        """The worker's command line."""
        return self.command_at(self.socket_path)

    def command_at(self, socket_path: Path) -> list[str]:
        """The worker's command line with its socket at `socket_path`."""
        return worker_command(self.spec, socket_path, tracebacks=self.tracebacks)

    async def start(self) -> None:
        head = head_start.claim(self.spec.id, self.command_at)
        if head is None:
            await self.check_model()  # (a head start's file was checked before it was started)
        log_path = self.log.open()  # a new file per start
        if head is not None:  # (the same command, started before the gateway was built: take it over)
            self.socket_path = head.socket_path
            self._process = await head_start.Adopted.of(head.process)
            log.info("engine for %s started ahead (pid %d; log: %s)", self.spec.id, head.process.pid, log_path)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            log.info("starting engine for %s (log: %s)", self.spec.id, log_path)
            self._process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.load_progress = 0.0
        self._output = start_copy(self._process.stdout, self.log, f"engine-output-{self.spec.id}", self._progressed)
        try:
            await self._wait_ready()
            self.load_progress = 1.0
        except BaseException:
            await self.stop()
            raise

    def _progressed(self, progress: float) -> None:
        self.load_progress = max(self.load_progress, progress)

    async def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.spec.ready_timeout
        client = self._http()
        while True:
            if self._process.returncode is not None:
                raise ModelLoadFailed(
                    await self._failure_message(f"its engine {describe_exit(self._process.returncode)}")
                )
            if self.socket_path.exists():
                try:
                    await client.get_json("/health", deadline=2.0)
                    log.info("engine for %s is ready (pid %s)", self.spec.id, self._process.pid)
                    return
                except (HTTPError, ValueError):
                    pass
            if time.monotonic() > deadline:
                raise ModelLoadFailed(f"The model '{self.spec.id}' did not load within {self.spec.ready_timeout:g}s")
            await asyncio.sleep(_POLL_INTERVAL)

    async def _failure_message(self, what: str) -> str:
        """A client-safe reason: only the worker's own one-line verdict, never its raw log."""
        if self._process is not None and self._process.returncode is not None:
            await finish_copy(self._output)  # the engine's last words are in the file before we read it
        tail = log_tail(self.log)
        log.error("engine for %s failed to start: %s\n--- log tail ---\n%s", self.spec.id, what, tail[-2000:])
        reason = ""
        for line in tail.splitlines():
            if line.startswith("somner worker: "):
                reason = line.removeprefix("somner worker: ")
        detail = f": {reason}" if reason else ""
        return f"The model '{self.spec.id}' could not be loaded ({what}){detail}"

    async def wait_exit(self) -> int | None:
        if self._process is None:
            return None
        return await self._process.wait()

    async def responsive(self, within: float) -> bool:  # (Supervised)
        if not self.alive:
            return False
        try:
            async with asyncio.timeout(within):
                await self._http().get_json("/health", deadline=within)
        except (HTTPError, ValueError, TimeoutError):
            return False
        return True

    async def kill(self) -> None:  # (Supervised)
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def stop(self) -> None:
        process = self._process
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.settings.stop_timeout):
                    await process.wait()
            except TimeoutError:
                log.warning("engine for %s ignored SIGTERM; killing it", self.spec.id)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.stdin is not None:
            process.stdin.close()
        await finish_copy(self._output)
        self._output = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
