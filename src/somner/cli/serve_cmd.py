"""`somner serve`: the gateway, serving every model it knows over HTTP."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from somner.cli.common import describe, load_or_exit, warn_unknown_environment
from somner.errors import SomnerError
from somner.models.registry import ModelConfigError
from somner.observability.logging import configure_logging
from somner.settings import Settings, resolve_data_dir, resolve_models_dir

log = logging.getLogger(__name__)


def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML configuration file."),
    host: str | None = typer.Option(None, "--host", help=describe("host")),
    port: int | None = typer.Option(None, "--port", help=describe("port")),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=describe("data_dir")),
    models_dir: Path | None = typer.Option(None, "--models-dir", help=describe("models_dir")),
    model: str | None = typer.Option(None, "--model", help=describe("model")),
    log_level: str | None = typer.Option(None, "--log-level", help=describe("log_level")),
    auth_off_anywhere: bool = typer.Option(
        False, "--i-know-auth-is-off", help="Allow auth.enabled: false on an address other than loopback."
    ),
) -> None:
    """Serve models over the OpenAI-compatible API (loopback only unless --host says otherwise)."""
    settings = load_or_exit(
        config,
        {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "models_dir": models_dir,
            "model": model,
            "log_level": log_level,
        },
    )
    configure_logging(settings.log_level)
    warn_unknown_environment()
    from somner.api.guard import is_loopback

    if not settings.auth.enabled and not is_loopback(settings.host) and not auth_off_anywhere:
        typer.echo(
            f"error: auth is off and Somner would listen on {settings.host}: anyone who can reach it could use it. "
            "Turn auth on, listen on 127.0.0.1, or pass --i-know-auth-is-off.",
            err=True,
        )
        raise typer.Exit(1)
    provision_default_model(settings)
    run(settings)


def provision_default_model(settings: Settings) -> None:
    """With no model configured and no GGUF in the models directory, assemble the default model there."""
    if settings.model is not None or settings.models:
        return
    models_dir = resolve_models_dir(settings, resolve_data_dir(settings))
    if models_dir.is_dir() and any(not p.name.startswith(".") for p in models_dir.glob("*.gguf")):
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from somner.models.default_model import DefaultModelUnavailable, ensure_default_model

    try:
        with Progress(
            TextColumn("[bold]default model[/bold]"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("assemble", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            path = ensure_default_model(models_dir, advance)
    except DefaultModelUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    log.info("default model ready: %s", path)


def run(settings: Settings) -> None:
    from somner.app import create_app
    from somner.http_server import serve

    try:
        app = create_app(settings)
    except SomnerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except ModelConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if settings.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: reachable from other machines", settings.host)
    log.info(
        "serving on http://%s:%d (data in %s)",
        settings.host,
        settings.port,
        app.state.services.paths.data_dir,
    )
    serve(app, host=settings.host, port=settings.port, timeout_graceful_shutdown=10)
