"""The supervisor: what `somner serve` does with `workers` above 1.

Contract of `supervise`: refuse what cannot be shared (see `shared_state_problem`, checked by the CLI first); run
the database's one-time start-up work once (`Services.prepare_store`: migrations, the first admin key), so the
gateway processes never race for it; check the ports are free; then keep `workers` gateway processes running.
A process that dies is started again after a pause that doubles with each death in a row (0.5 s up to 30 s; a
process that served for a minute has recovered); one that dies `_MAX_START_FAILURES` times in a row without ever
serving (a port taken, a broken model file) makes the supervisor stop the others and exit 1 rather than loop.
SIGTERM or SIGINT is passed to every process (each drains: see `http_server`), a second one makes them stop
without waiting for requests in flight; the supervisor waits for all of them (SIGKILL past the drain, the engines'
stop time and a margin), reaps every one (no zombies) and exits 0. Its own pid is the server's pid: the pid file
of `somner start` names it, and `somner stop` signals it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from types import FrameType

from somner.exits import describe_exit
from somner.gateway_processes.listening import port_taken
from somner.gateway_processes.orders import Orders, command, encode
from somner.models.registry import ModelSpec
from somner.observability.logfiles import newest_of, tail
from somner.observability.logging import server_log_kind
from somner.settings import Settings, resolve_data_dir

log = logging.getLogger(__name__)

_FIRST_DELAY = 0.5
_MAX_DELAY = 30.0
_STABLE_AFTER = 60.0  # a process that served this long has recovered: its next death restarts it at once
_MAX_START_FAILURES = 4  # deaths in a row of one process that never served: the configuration cannot work
_TICK = 0.5  # the longest the loop sleeps (signals, readiness and exits wake it at once)
_EXIT_WAIT = 1.0  # how long a process whose pipe closed may take to exit before the loop goes on
_KILL_MARGIN = 10.0  # beyond drain_timeout + engine.stop_timeout, before stragglers are killed
_TAIL_BYTES = 2000


def shared_state_problem(settings: Settings) -> str | None:
    """Why `settings` cannot run as several gateway processes, or None.

    With auth on, keys can carry rate limits, token quotas and a concurrency limit; without Redis each process
    would keep its own counters, so a key would get `workers` times its limits.
    """
    if settings.workers > 1 and settings.auth.enabled and settings.redis.url is None:
        return (
            f"workers: {settings.workers} needs redis.url (e.g. SOMNER_REDIS__URL=redis://127.0.0.1:6379/0): rate "
            "limits, token quotas and per-key concurrency must be shared by the gateway processes, and without "
            "Redis each process would keep its own. Set redis.url, or run one worker."
        )
    return None


def local_engine_models(specs: list[ModelSpec]) -> list[str]:
    """Models whose engines run on this machine, started by each gateway process for itself (pool members too)."""
    local = []
    for spec in specs:
        kinds = [member.kind for member in spec.entry.backends] if spec.kind == "pool" else [spec.kind]
        if any(kind in ("worker", "process", "exllamav3") for kind in kinds):
            local.append(spec.id)
    return local


async def _prepare(settings: Settings) -> list[str]:
    """The one-time start-up work; returns the models with local engines. Raises what `build_services` raises
    for a configuration that cannot work, and `StoreUnavailable` when the database cannot be reached."""
    from somner.services import build_services

    services = build_services(settings)
    try:
        await services.prepare_store()
        return local_engine_models(services.registry.specs())
    finally:
        await services.stop()


def supervise(settings: Settings, *, log_to_stderr: bool) -> int:
    """Run `settings.workers` gateway processes until SIGTERM/SIGINT; the exit status."""
    for port in (settings.port, settings.health_port):
        why = port_taken(settings.host, port) if port is not None else None
        if why is not None:
            log.error("cannot listen on %s:%s: %s", settings.host, port, why)
            return 1
    local = asyncio.run(_prepare(settings))
    if local:
        log.warning(
            "workers: %d and models with local engines (%s): every gateway process starts its own engine for "
            "each, so a loaded model takes %d times its memory (memory_budget and max_loaded apply per process)",
            settings.workers,
            ", ".join(local),
            settings.workers,
        )
    return Supervisor(settings, log_to_stderr=log_to_stderr).run()


@dataclass(slots=True)
class _Slot:
    """One of the `workers` places, filled by successive processes."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    ready_pipe: int | None = None  # the read end: a byte when the process serves, end of file when it is gone
    started_at: float = 0.0
    serving: bool = False
    start_failures: int = 0  # deaths in a row before serving
    deaths: int = 0  # deaths in a row without a stable run: sets the pause before the next start
    restart_at: float | None = None


class Supervisor:
    def __init__(self, settings: Settings, *, log_to_stderr: bool) -> None:
        self.settings = settings
        self.log_to_stderr = log_to_stderr
        self.slots = [_Slot(number) for number in range(1, settings.workers + 1)]
        self.log_dir = resolve_data_dir(settings) / "logs"
        self._signals = 0  # counted by the handler, acted on by the loop
        self._handled = 0
        self._stopping = False
        self._kill_at = float("inf")
        self._status = 0

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous_wakeup = signal.set_wakeup_fd(wake_write)  # a signal makes `select` return at once
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info(
                "starting %d gateway processes on http://%s:%d",
                len(self.slots),
                self.settings.host,
                self.settings.port,
            )
            for slot in self.slots:
                self._launch(slot)
            while not self._stopping or self._live():
                self._wait(wake_read)
                self._handle_signals()
                self._read_ready()
                self._reap()
                self._restart_due()
                self._kill_late()
            log.info("all gateway processes stopped")
            return self._status
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for slot in self.slots:
                self._abandon(slot)
            os.close(wake_read)
            os.close(wake_write)

    # -- the loop's steps -------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    def _live(self) -> list[_Slot]:
        return [slot for slot in self.slots if slot.process is not None]

    def _wait(self, wake_read: int) -> None:
        timeout = _TICK
        pending = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        if pending and not self._stopping:
            timeout = max(0.0, min(timeout, min(pending) - time.monotonic()))
        pipes = [slot.ready_pipe for slot in self.slots if slot.ready_pipe is not None]
        select.select([wake_read, *pipes], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(wake_read, 512):
                pass

    def _handle_signals(self) -> None:
        while self._handled < self._signals:
            self._handled += 1
            if not self._stopping:
                log.info("stopping: every gateway process drains (up to %gs)", self.settings.drain_timeout)
                self._stop_all()
            else:
                # uvicorn takes SIGINT during a drain as "stop now": requests in flight are cancelled.
                log.warning("second signal: gateway processes stop without waiting for requests in flight")
                self._signal_live(signal.SIGINT)

    def _stop_all(self) -> None:
        self._stopping = True
        self._kill_at = (
            time.monotonic() + self.settings.drain_timeout + self.settings.engine.stop_timeout + _KILL_MARGIN
        )
        for slot in self.slots:
            slot.restart_at = None
        self._signal_live(signal.SIGTERM)

    def _signal_live(self, sig: signal.Signals) -> None:
        for slot in self._live():
            assert slot.process is not None
            with contextlib.suppress(ProcessLookupError):
                slot.process.send_signal(sig)

    def _read_ready(self) -> None:
        for slot in self.slots:
            self._take_report(slot)

    def _take_report(self, slot: _Slot) -> None:
        """Read what the slot's process wrote to its pipe: a byte once it serves, then end of file."""
        fd = slot.ready_pipe
        if fd is None:
            return
        try:
            data = os.read(fd, 16)
        except BlockingIOError:
            return
        if data and not slot.serving and slot.process is not None:
            slot.serving = True
            log.info("gateway process %d (pid %d) is serving", slot.number, slot.process.pid)
        if not data:  # end of file: the process is exiting; let it finish so `_reap` sees it now, not a tick later
            os.close(fd)
            slot.ready_pipe = None
            if slot.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    slot.process.wait(_EXIT_WAIT)

    def _reap(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            status = process.poll()
            if status is None:
                continue
            self._take_report(slot)  # it may have served and died since the last look
            slot.process = None
            if slot.ready_pipe is not None:
                os.close(slot.ready_pipe)
                slot.ready_pipe = None
            if self._stopping:
                log.info("gateway process %d (pid %d) %s", slot.number, process.pid, describe_exit(status))
                continue
            self._died(slot, process.pid, describe_exit(status))

    def _died(self, slot: _Slot, pid: int | None, ending: str) -> None:
        now = time.monotonic()
        who = f"gateway process {slot.number}" + (f" (pid {pid})" if pid is not None else "")
        if slot.serving:
            slot.start_failures = 0
            if now - slot.started_at >= _STABLE_AFTER:
                slot.deaths = 0
        else:
            slot.start_failures += 1
            ending += " before it served"
        slot.deaths += 1
        if slot.start_failures >= _MAX_START_FAILURES:
            log.error(
                "%s %s, %d times in a row: giving up, stopping the others%s",
                who,
                ending,
                slot.start_failures,
                self._log_tail(slot),
            )
            self._status = 1
            self._stop_all()
            return
        delay = min(_MAX_DELAY, _FIRST_DELAY * 2 ** (slot.deaths - 1))
        log.warning("%s %s; starting it again in %gs", who, ending, delay)
        slot.restart_at = now + delay

    def _log_tail(self, slot: _Slot) -> str:
        path = newest_of(self.log_dir, server_log_kind(slot.number))
        text = tail([path], _TAIL_BYTES).rstrip() if path is not None else ""
        if len(text.encode()) >= _TAIL_BYTES - 1:
            text = text.partition("\n")[2]  # from the first whole line
        return f"; the end of its log ({path}):\n{text}" if text else ""

    def _restart_due(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._launch(slot)

    def _kill_late(self) -> None:
        if time.monotonic() < self._kill_at:
            return
        self._kill_at = float("inf")
        for slot in self._live():
            assert slot.process is not None
            log.warning("gateway process %d (pid %d) did not stop in time: killed", slot.number, slot.process.pid)
            _kill_group(slot.process)

    # -- starting and abandoning processes --------------------------------------------------------------------

    def _launch(self, slot: _Slot) -> None:
        slot.restart_at = None
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        orders = Orders(self.settings, slot.number, os.getpid(), write_end, self.log_to_stderr)
        try:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command(slot.number),
                stdin=subprocess.PIPE,
                pass_fds=(write_end,),
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only, which passes it on
            )
        except OSError as exc:
            os.close(read_end)
            self._died(slot, None, f"could not be started ({exc.strerror or exc})")
            return
        finally:
            os.close(write_end)
        slot.process, slot.ready_pipe = process, read_end
        slot.started_at, slot.serving = time.monotonic(), False
        assert process.stdin is not None
        with contextlib.suppress(OSError):  # it died at once: `_reap` will say so
            process.stdin.write(encode(orders))
        with contextlib.suppress(OSError):
            process.stdin.close()
        log.info("started gateway process %d (pid %d)", slot.number, process.pid)

    def _abandon(self, slot: _Slot) -> None:
        """Leave nothing behind when the loop ended by an error: kill and reap the process, close its pipe."""
        if slot.ready_pipe is not None:
            os.close(slot.ready_pipe)
            slot.ready_pipe = None
        process, slot.process = slot.process, None
        if process is not None:
            _kill_group(process)
            process.wait()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a gateway process and its process group (it leads its own session); its engines, in sessions of
    their own, stop when it is gone (their stdin closes, or PR_SET_PDEATHSIG)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
