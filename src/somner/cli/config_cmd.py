"""`somner config check|show|example|import-tabby`."""

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
    from somner.models.placement import gpu_problem
    from somner.models.registry import ModelConfigError, ModelRegistry
    from somner.services import gpu_devices

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
    devices = gpu_devices()
    problems = [problem for spec in registry.specs() if (problem := gpu_problem(spec, devices)) is not None]
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    where = f"{len(devices)} GPU{'s' if len(devices) != 1 else ''}" if devices else "no GPU: models run on the CPU"
    typer.echo(f"configuration is valid ({where})")


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


@app.command("import-tabby")
def import_tabby(
    path: Path = typer.Argument(..., help="TabbyAPI's config.yml.", exists=False),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the configuration here (default: stdout)."),
) -> None:
    """Turn a TabbyAPI config.yml into a Somner configuration; each option that cannot be mapped is listed on
    stderr with the reason. Exit 1 when the file is not a TabbyAPI configuration."""
    from pydantic import ValidationError

    from somner.cli.common import describe_errors
    from somner.settings import ConfigFileError, Settings, read_config_file, tabby_import

    try:
        conversion = tabby_import.convert(read_config_file(path))
    except (ConfigFileError, tabby_import.TabbyConfigError) as exc:
        problems = exc.problems if isinstance(exc, tabby_import.TabbyConfigError) else [str(exc)]
        typer.echo(f"error: {path} is not a TabbyAPI configuration Somner can import:", err=True)
        for problem in problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(1) from None
    try:
        Settings(**conversion.config)  # the promise: what is printed is a configuration Somner accepts
    except ValidationError as exc:
        typer.echo(f"error: the configuration made from {path} is not valid:", err=True)
        for line in describe_errors(exc):
            typer.echo(f"  - {line}", err=True)
        raise typer.Exit(1) from None
    for warning in conversion.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for outcome in conversion.outcomes:
        if outcome.target is None:
            typer.echo(f"not mapped: {tabby_import.describe(outcome)}", err=True)
        elif outcome.reason:
            typer.echo(f"note: {tabby_import.describe(outcome)}", err=True)
    text = tabby_import.render(conversion, str(path))
    if output is None:
        typer.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            typer.echo(f"error: cannot write {output}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
    mapped, skipped = len(conversion.mapped), len(conversion.not_mapped)
    where = f" into {output}" if output is not None else ""
    typer.echo(f"imported {mapped} option(s){where}; {skipped} not mapped (listed above)", err=True)
