"""The `somner` command line, assembled (see cli/__init__.py for why it is apart)."""

from __future__ import annotations

import typer

from somner import __version__
from somner.cli import (
    config_cmd,
    daemon_cmd,
    exl3_worker_cmd,
    models_cmd,
    run_cmd,
    serve_cmd,
    show_cmd,
    store_cmd,
    worker_cmd,
)

ABOUT = (
    "Somner: a self-hosted LLM server and gateway. It serves models over the OpenAI, Ollama, KoboldAI, Anthropic "
    "and TabbyAPI APIs on one port, with keys, limits and usage records; `somner run MODEL` talks to one from here."
)

app = typer.Typer(
    name="somner",
    help=ABOUT,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"somner {__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Somner: a self-hosted LLM server and gateway."""


app.command("serve")(serve_cmd.serve)
app.command("start")(daemon_cmd.start)
app.command("stop")(daemon_cmd.stop)
app.command("restart")(daemon_cmd.restart)
app.command("status")(daemon_cmd.status)
app.command("run")(run_cmd.run)
app.command("show")(show_cmd.show)
app.command("worker", hidden=False)(worker_cmd.worker)
app.command("worker-exl3")(exl3_worker_cmd.worker_exl3)
app.add_typer(config_cmd.app, name="config")
app.add_typer(models_cmd.app, name="models")
app.command("ps")(models_cmd.ps)
app.add_typer(store_cmd.users_app, name="users")
app.add_typer(store_cmd.keys_app, name="keys")
app.command("usage")(store_cmd.usage)
