"""The `process` backend: any engine started from a command line (llama-server, `vllm serve`, TabbyAPI, or
`somner worker --port`), reached over loopback HTTP in the OpenAI dialect.

The command gets a free port ({port}), the model's file ({model_path}) and id ({model_id}). It runs in its own
process group, dies with the gateway (Linux: PR_SET_PDEATHSIG), writes to the model's log file, and is ready when
its health URL answers 200. Stopping sends SIGTERM to the group, then SIGKILL after the grace period.
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
from somner.models.backends.openai_http import OpenAIHTTPClient, ServedOverHTTP
from somner.models.backends.worker import log_tail
from somner.models.registry import ModelSpec
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
    def __init__(self, spec: ModelSpec, log_dir: Path, settings: EngineSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.log_path = log_dir / f"process-{spec.id}.log"
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._client: OpenAIHTTPClient | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _http(self) -> OpenAIHTTPClient:  # (ServedOverHTTP)
        if self._client is None:
            timeout = httpx.Timeout(connect=5.0, read=self.settings.read_timeout, write=30.0, pool=30.0)
            client = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{self.port}",
                timeout=timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
            model_name = self.spec.entry.upstream_model or self.spec.id
            self._client = OpenAIHTTPClient(client, label=f"the engine for {self.spec.id}", model_name=model_name)
        return self._client

    async def start(self) -> None:
        self.port = free_port()
        command = command_for(self.spec, self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting %s for %s (log: %s)", command[0], self.spec.id, self.log_path)
        try:
            with self.log_path.open("ab") as log_file:
                self._process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                    env={**os.environ, **self.spec.entry.env},
                )
        except OSError as exc:
            raise ModelLoadFailed(f"The engine for '{self.spec.id}' could not be started: {exc.strerror}") from exc
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
                    tail = log_tail(self.log_path)
                    log.error("engine for %s exited at start:\n%s", self.spec.id, tail[-2000:])
                    raise ModelLoadFailed(
                        f"The model '{self.spec.id}' could not be loaded: its command exited with status "
                        f"{self._process.returncode} (see {self.log_path.name})"
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

    async def stop(self) -> None:
        process = self._process
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if process is None or process.returncode is not None:
            return
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
