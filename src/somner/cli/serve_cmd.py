"""`somner serve`: the gateway, serving every model it knows over HTTP.

Logs go to stderr and to `<data_dir>/logs/<UTC timestamp>-server.log` (rotated). SIGTERM or SIGINT drains: the
port stops accepting connections, requests in flight (streams included) get up to `drain_timeout` to finish,
then usage records are flushed, engines stopped, and the process exits 0. With `--workers N` above 1 this
process supervises N gateway processes on the same port instead (`somner.gateway_processes`); each of those is
`somner serve --gateway-process <n>`, an internal flag.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import typer

from somner.cli.common import describe, load_or_exit, warn_unknown_environment
from somner.errors import SomnerError
from somner.gateway_processes.orders import FLAG as GATEWAY_PROCESS_FLAG
from somner.gateway_processes.supervisor import shared_state_problem
from somner.models.registry import ModelConfigError, ModelRegistry
from somner.observability.logging import close_log_files, configure_server_logging
from somner.settings import Settings, is_loopback, resolve_data_dir, resolve_models_dir

log = logging.getLogger(__name__)


# The options `somner serve` and `somner start` share (start passes them on to serve).
ConfigOption = typer.Option(None, "--config", "-c", help="YAML configuration file.")
HostOption = typer.Option(None, "--host", help=describe("host"))
PortOption = typer.Option(None, "--port", help=describe("port"))
DataDirOption = typer.Option(None, "--data-dir", help=describe("data_dir"))
ModelsDirOption = typer.Option(None, "--models-dir", help=describe("models_dir"))
ModelOption = typer.Option(None, "--model", help=describe("model"))
LogLevelOption = typer.Option(None, "--log-level", help=describe("log_level"))
HealthPortOption = typer.Option(None, "--health-port", help=describe("health_port"))
WorkersOption = typer.Option(None, "--workers", help=describe("workers"))
AuthOffOption = typer.Option(
    False, "--i-know-auth-is-off", help="Allow auth.enabled: false on an address other than loopback."
)


def serve(
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
    log_stderr: bool = typer.Option(True, "--log-stderr/--no-log-stderr", hidden=True),
    pid_file: Path | None = typer.Option(None, "--pid-file", hidden=True),
    gateway_process: int | None = typer.Option(None, GATEWAY_PROCESS_FLAG, hidden=True),
) -> None:
    """Serve every model over the OpenAI, Ollama, KoboldAI, Anthropic and TabbyAPI APIs on one port (those in
    `api_servers`), with keys, limits and usage records; loopback only unless --host says otherwise."""
    # --no-log-stderr and --pid-file are for `somner start`: its server logs to files only (its stderr, kept in
    # a console file, then holds just what bypasses logging), and removes the pid file start wrote when it exits.
    if gateway_process is not None:  # started by a supervisor, which sends the settings itself
        from somner.gateway_processes.child import run_gateway_process

        raise typer.Exit(run_gateway_process(gateway_process))
    settings = load_or_exit(
        config,
        {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "models_dir": models_dir,
            "model": model,
            "log_level": log_level,
            "health_port": health_port,
            "workers": workers,
        },
    )
    log_dir = resolve_data_dir(settings) / "logs"
    try:
        configure_server_logging(
            settings.log_level,
            log_dir,
            log_format=settings.log_format,
            max_bytes=int(settings.log_max_bytes),
            keep=settings.log_keep,
            to_stderr=log_stderr,
            tracebacks=not settings.strict_privacy,
        )
    except OSError as exc:
        typer.echo(f"error: cannot write log files in {log_dir}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    try:
        _serve(settings, auth_off_anywhere, log_stderr)
    except typer.Exit:
        raise  # an error already explained (typer's Exit is an Exception too)
    except Exception:
        log.exception("somner serve failed")  # the traceback goes to the log file too, not only to stderr
        raise typer.Exit(1) from None
    finally:
        close_log_files()
        if pid_file is not None:
            _remove_own_pid_file(pid_file)


def _remove_own_pid_file(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text(encoding="utf-8").strip()) == os.getpid():
            path.unlink()


def _serve(settings: Settings, auth_off_anywhere: bool, log_stderr: bool) -> None:
    warn_unknown_environment()
    if not settings.auth.enabled and not is_loopback(settings.host) and not auth_off_anywhere:
        typer.echo(
            f"error: auth is off and Somner would listen on {settings.host}: anyone who can reach it could use it. "
            "Turn auth on, listen on 127.0.0.1, or pass --i-know-auth-is-off.",
            err=True,
        )
        raise typer.Exit(1)
    problem = shared_state_problem(settings)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    provision_default_model(settings)
    if settings.workers > 1:
        run_several(settings, log_stderr)
    else:
        head_start_default_model(settings)
        run(settings)


def standalone(args: list[str]) -> None:
    """Run `somner serve` with only this module imported (see somner/cli/__init__.py)."""
    from somner.cli import run_app

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve)
    run_app(app, args, "somner serve")


def head_start_default_model(settings: Settings) -> None:
    """Start the default model's engine now, while the gateway is built (models/backends/head_start.py): a local
    GGUF model under the llama.cpp worker, whose file passes the checks every model file passes before an engine
    sees it. Anything unusual and the manager starts it as it would any model."""
    from somner.models.backends import head_start
    from somner.models.backends.worker_command import worker_command
    from somner.models.gguf import GGUFError
    from somner.models.vetting import vet_model_file
    from somner.settings import resolve_dir

    data_dir = resolve_data_dir(settings)
    try:
        registry = ModelRegistry(
            settings, resolve_models_dir(settings, data_dir), resolve_dir(settings.templates_dir, data_dir, "templates")
        )
        if registry.default_id is None:
            return
        spec = registry.get(registry.default_id)
        if spec.kind != "worker" or spec.path is None:
            return
        vet_model_file(spec.path)
    except (ModelConfigError, SomnerError, GGUFError, OSError):
        return  # (the same problem is met, and explained, where it always is)
    tracebacks = not settings.strict_privacy
    try:
        head_start.spawn(spec.id, lambda socket_path: worker_command(spec, socket_path, tracebacks=tracebacks))
    except OSError as exc:
        log.debug("no head start for %s: %s", spec.id, exc)


def provision_default_model(settings: Settings) -> None:
    """With no model configured and no GGUF in the models directory, assemble the default model there."""
    if settings.model is not None or settings.models:
        return
    models_dir = resolve_models_dir(settings, resolve_data_dir(settings))
    if models_dir.is_dir() and any(not p.name.startswith(".") for p in models_dir.glob("*.gguf")):
        return
    from somner.cli.progress import transfer
    from somner.models.default_model import DefaultModelUnavailable, ensure_default_model

    try:
        with transfer("assembling the default model") as progress:
            path = ensure_default_model(models_dir, progress)
    except DefaultModelUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    log.info("default model ready: %s", path)


def run_several(settings: Settings, log_stderr: bool) -> None:
    """`workers` gateway processes under a supervisor (this process), until SIGTERM/SIGINT."""
    from somner.gateway_processes.supervisor import supervise

    _warn_if_reachable(settings)
    with _explained_errors():
        status = supervise(settings, log_to_stderr=log_stderr)
    if status != 0:
        raise typer.Exit(status)
    log.info("stopped")


@contextlib.contextmanager
def _explained_errors() -> Iterator[None]:
    """Configuration and start-up errors end the command with their message (no traceback) and status 1."""
    try:
        yield
    except SomnerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except ModelConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _warn_if_reachable(settings: Settings) -> None:
    if not is_loopback(settings.host):
        log.warning("listening on %s: reachable from other machines", settings.host)


def run(settings: Settings) -> None:
    from somner.app import create_app
    from somner.http_limits import gateway_protocol
    from somner.http_server import serve

    with _explained_errors():
        app = create_app(settings)
    _warn_if_reachable(settings)
    log.info(
        "serving on http://%s:%d (data in %s)",
        settings.host,
        settings.port,
        app.state.services.paths.data_dir,
    )
    serve(
        app,
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=settings.drain_timeout,
        http=gateway_protocol(settings.limits),
    )
    log.info("stopped")
