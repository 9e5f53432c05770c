"""What every command shares: loading settings (or explaining why not) and help texts from the settings model."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError

from somner.settings import ConfigFileError, Settings, load_settings, unknown_environment_keys


def describe(field: str) -> str:
    """The settings field's description, for `--help`."""
    return Settings.model_fields[field].description or ""


def _model_at(path: list[str | int]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per problem, naming the key (with a suggestion for misspelt keys)."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        key = ".".join(str(part) for part in loc)
        if error["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            known = list(parent.model_fields) if parent is not None else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean '{'.'.join(str(p) for p in [*loc[:-1], close[0]])}'?)" if close else ""
            lines.append(f"unknown key '{key}'{hint}")
        else:
            shown = error.get("input")
            got = f" (got {shown!r})" if not isinstance(shown, dict | list) else ""
            lines.append(f"{key or 'config'}: {error['msg']}{got}")
    return lines


def load_or_exit(config: Path | None, cli: dict[str, Any]) -> Settings:
    try:
        return load_settings(config, cli)
    except ConfigFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except ValidationError as exc:
        where = f" in {config}" if config is not None else ""
        typer.echo(f"error: invalid configuration{where}:", err=True)
        for line in describe_errors(exc):
            typer.echo(f"  - {line}", err=True)
        raise typer.Exit(1) from None


def warn_unknown_environment() -> None:
    for key in unknown_environment_keys(os.environ):
        typer.echo(f"warning: {key} names no setting and is ignored", err=True)
