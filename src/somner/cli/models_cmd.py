"""`somner models list|load|unload|pull|rm` and `somner ps`.

list, load, unload and ps talk to a running server with an admin key (found as `somner run` finds them: see
`somner.cli.remote`); pull and rm work offline on the models directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from somner.cli import remote
from somner.cli.common import load_or_exit
from somner.cli.progress import step, transfer
from somner.settings import Settings, resolve_data_dir, resolve_models_dir

app = typer.Typer(
    help="Manage models: list, load, unload (on a running server); pull, rm (offline).", no_args_is_help=True
)

ConfigOption = remote.ConfigOption
UrlOption = remote.UrlOption
KeyOption = remote.KeyOption
DataDirOption = remote.DataDirOption
ModelsDirOption = typer.Option(None, "--models-dir", help="Models directory (default: <data_dir>/models).")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bar or spinner: plain lines only.")


def _call(server: remote.Server, method: str, path: str) -> Any:
    try:
        return server.request(method, path)
    except remote.ServerError as exc:
        remote.fail(str(exc))


def _ago(moment: float | None) -> str:
    if moment is None:
        return "-"
    delta = moment - time.time()
    if abs(delta) < 1:
        return "now"
    amount = abs(delta)
    text = f"{amount:.0f}s" if amount < 120 else f"{amount / 60:.0f}m" if amount < 7200 else f"{amount / 3600:.0f}h"
    return f"in {text}" if delta > 0 else f"{text} ago"


def _size(value: int) -> str:
    return f"{value / 1024**3:.1f} GiB" if value >= 1024**3 else f"{value / 1024**2:.0f} MiB" if value else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@app.command("list")
def list_models(
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    url: str | None = UrlOption,
    key: str | None = KeyOption,
) -> None:
    """Every model the running server knows, with its state, backend, memory estimate and use."""
    server = remote.connect(config, data_dir, url, key)
    models = _call(server, "GET", "/admin/models")["data"]
    rows = [["ID", "STATE", "BACKEND", "MEMORY", "IN FLIGHT", "LAST USED"]]
    for m in models:
        rows.append(
            [m["id"], m["state"], m["backend"], _size(m["memory_estimate"]), str(m["in_flight"]), _ago(m["last_used"])]
        )
    typer.echo(_table(rows))


@app.command("load")
def load(
    model_id: str,
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    url: str | None = UrlOption,
    key: str | None = KeyOption,
    quiet: bool = QuietOption,
) -> None:
    """Load a model now on the running server (a spinner shows while its engine starts)."""
    server = remote.connect(config, data_dir, url, key)
    with step(f"loading {model_id}", quiet=quiet):
        result = _call(server, "POST", f"/admin/models/{model_id}/load")
    typer.echo(f"{result['id']}: {result['state']}")


@app.command("unload")
def unload(
    model_id: str,
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    url: str | None = UrlOption,
    key: str | None = KeyOption,
) -> None:
    """Unload a model now on the running server (requests in flight may finish first)."""
    server = remote.connect(config, data_dir, url, key)
    result = _call(server, "POST", f"/admin/models/{model_id}/unload")
    typer.echo(f"{result['id']}: {result['state']}")


def ps(
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    url: str | None = UrlOption,
    key: str | None = KeyOption,
) -> None:
    """The models loaded on the running server, and until when they stay loaded."""
    server = remote.connect(config, data_dir, url, key)
    models = [
        m for m in _call(server, "GET", "/admin/models")["data"] if m["state"] in ("loaded", "loading", "unloading")
    ]
    rows = [["NAME", "STATE", "BACKEND", "MEMORY", "IN FLIGHT", "UNTIL"]]
    for m in models:
        until = "forever" if m["keep_loaded"] else _ago(m["expires_at"]) if m["expires_at"] else "-"
        rows.append([m["id"], m["state"], m["backend"], _size(m["memory_estimate"]), str(m["in_flight"]), until])
    typer.echo(_table(rows))


def _models_dir(config: Path | None, data_dir: Path | None, models_dir: Path | None) -> tuple[Settings, Path]:
    settings = load_or_exit(config, {"data_dir": data_dir, "models_dir": models_dir})
    return settings, resolve_models_dir(settings, resolve_data_dir(settings))


@app.command("pull")
def pull(
    source: str = typer.Argument(..., help="hf:ORG/REPO[:QUANT or FILE], or an http(s) URL of a .gguf file."),
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    models_dir: Path | None = ModelsDirOption,
    quiet: bool = QuietOption,
) -> None:
    """Download a GGUF model into the models directory (progress with bytes, rate and time left; resumable,
    checked, moved into place atomically)."""
    from somner.models.pull import PullError
    from somner.models.pull import pull as run_pull

    settings, directory = _models_dir(config, data_dir, models_dir)
    try:
        with transfer(f"pull {source}", quiet=quiet) as progress:
            path = run_pull(source, directory, max_bytes=int(settings.max_pull_bytes), progress=progress)
    except PullError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{path.stem}: ready ({path})")


@app.command("rm")
def rm(
    model_id: str,
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    models_dir: Path | None = ModelsDirOption,
) -> None:
    """Delete a model file from the models directory."""
    from somner.models.names import is_valid_model_name

    _, directory = _models_dir(config, data_dir, models_dir)
    if not is_valid_model_name(model_id):
        typer.echo(f"error: {model_id!r} is not a model id", err=True)
        raise typer.Exit(1)
    path = directory / f"{model_id}.gguf"
    if not path.is_file():
        typer.echo(f"error: no {path.name} in {directory} (models from the configuration are removed there)", err=True)
        raise typer.Exit(1)
    path.unlink()
    typer.echo(f"{model_id}: removed")
