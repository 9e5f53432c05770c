"""`somner models list|load|unload|pull|rm` and `somner ps`.

list, load, unload and ps talk to a running server (its address from --url, else from the same settings as
`serve`); pull and rm work offline on the models directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import typer

from somner.cli.common import load_or_exit
from somner.settings import Settings, resolve_data_dir, resolve_models_dir

app = typer.Typer(
    help="Manage models: list, load, unload (on a running server); pull, rm (offline).", no_args_is_help=True
)

ConfigOption = typer.Option(None, "--config", "-c", help="YAML configuration file.")
UrlOption = typer.Option(None, "--url", help="Server address (default: from the configuration's host and port).")
DataDirOption = typer.Option(None, "--data-dir", help="Data directory (see `somner serve --help`).")
ModelsDirOption = typer.Option(None, "--models-dir", help="Models directory (default: <data_dir>/models).")


def server_url(settings: Settings, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)  # noqa: S104 - mapping, not binding
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def _call(method: str, url: str, path: str) -> Any:
    try:
        response = httpx.request(method, f"{url}{path}", timeout=httpx.Timeout(10.0, read=600.0))
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach Somner at {url} ({exc.__class__.__name__}); is it running?", err=True)
        raise typer.Exit(1) from None
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        typer.echo(f"error: {message or response.text}", err=True)
        raise typer.Exit(1)
    return body


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
def list_models(config: Path | None = ConfigOption, url: str | None = UrlOption) -> None:
    """Every known model and its state."""
    base = server_url(load_or_exit(config, {}), url)
    models = _call("GET", base, "/admin/models")["data"]
    rows = [["ID", "STATE", "BACKEND", "MEMORY", "IN FLIGHT", "LAST USED"]]
    for m in models:
        rows.append(
            [m["id"], m["state"], m["backend"], _size(m["memory_estimate"]), str(m["in_flight"]), _ago(m["last_used"])]
        )
    typer.echo(_table(rows))


@app.command("load")
def load(model_id: str, config: Path | None = ConfigOption, url: str | None = UrlOption) -> None:
    """Load a model now (on a running server)."""
    base = server_url(load_or_exit(config, {}), url)
    result = _call("POST", base, f"/admin/models/{model_id}/load")
    typer.echo(f"{result['id']}: {result['state']}")


@app.command("unload")
def unload(model_id: str, config: Path | None = ConfigOption, url: str | None = UrlOption) -> None:
    """Unload a model now (requests in flight may finish first)."""
    base = server_url(load_or_exit(config, {}), url)
    result = _call("POST", base, f"/admin/models/{model_id}/unload")
    typer.echo(f"{result['id']}: {result['state']}")


def ps(config: Path | None = ConfigOption, url: str | None = UrlOption) -> None:
    """The models loaded on a running server."""
    base = server_url(load_or_exit(config, {}), url)
    models = [
        m for m in _call("GET", base, "/admin/models")["data"] if m["state"] in ("loaded", "loading", "unloading")
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
) -> None:
    """Download a GGUF model into the models directory (resumable, checked, moved into place atomically)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from somner.models.pull import PullError
    from somner.models.pull import pull as run_pull

    settings, directory = _models_dir(config, data_dir, models_dir)
    try:
        with Progress(TextColumn("[bold]pull[/bold]"), BarColumn(), DownloadColumn(), TransferSpeedColumn()) as bar:
            task = bar.add_task("pull", total=None)
            path = run_pull(
                source,
                directory,
                max_bytes=int(settings.max_pull_bytes),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
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
