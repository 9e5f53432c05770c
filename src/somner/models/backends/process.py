"""The `process` backend: any engine started from a command line (llama-server, `vllm serve`, TabbyAPI, or
`somner worker --port`), reached over loopback HTTP in the OpenAI dialect.

The command gets a free port ({port}), the model's file ({model_path}) and id ({model_id}). It runs in its own
process group, dies with the gateway (Linux: PR_SET_PDEATHSIG), its output copied by the gateway into the model's
rotating log file (`<data_dir>/logs/<UTC timestamp>-process-<model>.log`), and is ready when its health URL answers
200. Stopping sends SIGTERM to the group, then SIGKILL after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from somner.errors import ModelLoadFailed
from somner.exits import describe_exit
from somner.models.backends.http1 import ConnectionPool, Endpoint
from somner.models.backends.openai_http import OpenAIHTTPClient, ServedOverHTTP
from somner.models.backends.worker import log_tail
from somner.models.gguf import GGUFError
from somner.models.registry import ModelSpec
from somner.models.vetting import vet_model_file
from somner.observability.engine_output import finish_copy, start_copy
from somner.observability.logfiles import DEFAULT_KEEP, DEFAULT_MAX_BYTES, RotatingFile
from somner.settings import EngineSettings

log = logging.getLogger(__name__)

_POLL_INTERVAL = 0.1
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command_for(spec: ModelSpec, port: int) -> list[str]:
    raw = spec.entry.command
    assert raw is not None
    parts = shlex.split(raw) if isinstance(raw, str) else list(raw)
    values = {"port": str(port), "model_path": str(spec.path or ""), "model_id": spec.id}
    try:
        return [part.format_map(values) for part in parts]
    except (KeyError, ValueError) as exc:
        raise ModelLoadFailed(f"The command of '{spec.id}' has a bad placeholder: {exc}") from exc


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ProcessBackend(ServedOverHTTP):
    def __init__(
        self,
        spec: ModelSpec,
        log_dir: Path,
        settings: EngineSettings,
        *,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        log_keep: int = DEFAULT_KEEP,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.log = RotatingFile(log_dir, f"process-{spec.id}", max_bytes=log_max_bytes, keep=log_keep)
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._output: asyncio.Task[None] | None = None
        self._client: OpenAIHTTPClient | None = None

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
                Endpoint(host="127.0.0.1", port=self.port), connect_timeout=5.0, read_timeout=self.settings.read_timeout
            )
            model_name = self.spec.entry.upstream_model or self.spec.id
            self._client = OpenAIHTTPClient(pool, label=f"the engine for {self.spec.id}", model_name=model_name)
        return self._client

    async def check_model(self) -> None:
        """A GGUF file handed to the engine is vetted first (llama-server's parser never sees a hostile one);
        other model formats are the engine's business."""
        path = self.spec.path
        if path is None or path.suffix.lower() != ".gguf" or not path.is_file():
            return
        try:
            await asyncio.to_thread(vet_model_file, path)
        except GGUFError as exc:
            raise ModelLoadFailed(f"The model '{self.spec.id}' cannot be loaded: {exc}") from exc

    async def start(self) -> None:
        await self.check_model()
        self.port = free_port()
        command = command_for(self.spec, self.port)
        log_path = self.log.open()  # a new file per start
        log.info("starting %s for %s (log: %s)", command[0], self.spec.id, log_path)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, **self.spec.entry.env},
            )
        except OSError as exc:
            self.log.close()
            raise ModelLoadFailed(f"The engine for '{self.spec.id}' could not be started: {exc.strerror}") from exc
        self._output = start_copy(self._process.stdout, self.log, f"engine-output-{self.spec.id}")
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        assert self._process is not None
        url = self.spec.entry.health_url.format(port=self.port)
        deadline = time.monotonic() + self.spec.ready_timeout
        async with httpx.AsyncClient(timeout=2.0) as probe:
            while True:
                if self._process.returncode is not None:
                    await finish_copy(self._output)
                    tail = log_tail(self.log)
                    log.error("engine for %s exited at start:\n%s", self.spec.id, tail[-2000:])
                    name = self.log_path.name if self.log_path is not None else "its log"
                    raise ModelLoadFailed(
                        f"The model '{self.spec.id}' could not be loaded: its command "
                        f"{describe_exit(self._process.returncode)} (see {name})"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await probe.get(url)).status_code == 200:
                        log.info("engine for %s is ready on port %d", self.spec.id, self.port)
                        return
                if time.monotonic() > deadline:
                    raise ModelLoadFailed(
                        f"The model '{self.spec.id}' did not load within {self.spec.ready_timeout:g}s"
                    )
                await asyncio.sleep(_POLL_INTERVAL)

    async def wait_exit(self) -> int | None:
        if self._process is None:
            return None
        return await self._process.wait()

    async def responsive(self, within: float) -> bool:  # (Supervised)
        """Whether the engine's health URL answers 200 within `within` seconds."""
        if not self.alive:
            return False
        url = self.spec.entry.health_url.format(port=self.port)
        try:
            async with asyncio.timeout(within), httpx.AsyncClient(timeout=within) as probe:
                return (await probe.get(url)).status_code == 200
        except (httpx.HTTPError, TimeoutError):
            return False

    async def kill(self) -> None:  # (Supervised)
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def stop(self) -> None:
        process = self._process
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(self.settings.stop_timeout):
                    await process.wait()
            except TimeoutError:
                log.warning("engine for %s ignored SIGTERM; killing it", self.spec.id)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        await finish_copy(self._output)
        self._output = None
