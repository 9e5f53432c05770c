"""`somner config check|show|example`."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from somner.cli.common import load_or_exit, warn_unknown_environment
from somner.config_example import render
from somner.settings import resolve_data_dir, resolve_models_dir

app = typer.Typer(help="Check, show or generate configuration.", no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", "-c", help="YAML configuration file.", exists=False)


@app.command("check")
def check(config: Path | None = ConfigOption) -> None:
    """Validate the configuration (file + environment + per-model files); exit 1 naming each bad key or value."""
    from somner.errors import ModelNotFound
    from somner.models.registry import ModelConfigError, ModelRegistry

    settings = load_or_exit(config, {})
    warn_unknown_environment()
    models_dir = resolve_models_dir(settings, resolve_data_dir(settings))
    try:
        registry = ModelRegistry(settings, models_dir)
        for name in settings.preload:
            registry.get(name)
    except ModelConfigError as exc:
        typer.echo(f"error: invalid model settings in {models_dir}: {exc}", err=True)
        raise typer.Exit(1) from None
    except ModelNotFound as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo("configuration is valid")


@app.command("show")
def show(config: Path | None = ConfigOption) -> None:
    """Print the effective configuration (file < environment), secrets masked."""
    settings = load_or_exit(config, {})
    data = settings.model_dump(mode="json")  # secret fields dump as '**********'
    data_dir = resolve_data_dir(settings)
    data["data_dir"] = str(data_dir)
    data["models_dir"] = str(resolve_models_dir(settings, data_dir))
    typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command("example")
def example() -> None:
    """Print an example configuration documenting every key with its default."""
    typer.echo(render(), nl=False)
