"""`somner worker`: serve one GGUF model over the OpenAI API (the gateway starts these itself)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from somner.models.names import is_valid_model_name
from somner.observability.logging import configure_logging


def worker(
    model: Path = typer.Option(..., "--model", help="GGUF file to serve.", dir_okay=False),
    socket: Path | None = typer.Option(None, "--socket", help="Serve on this unix socket."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="Serve on this TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address for --port."),
    model_id: str | None = typer.Option(None, "--id", help="Model id to report (default: the file stem)."),
    ctx: int | None = typer.Option(None, "--ctx", min=256, help="Context tokens per sequence."),
    parallel: int = typer.Option(4, "--parallel", min=1, max=256, help="Sequences decoded together."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads."),
    batch: int = typer.Option(512, "--batch", min=32, help="Prompt tokens per scheduling step."),
    gpu_layers: int = typer.Option(-1, "--gpu-layers", min=-1, help="Layers to offload to a GPU (-1: all)."),
    cpu_repack: bool = typer.Option(False, "--cpu-repack", help="Repack weights for faster CPU kernels."),
    template: str | None = typer.Option(None, "--template", help="Chat template: built-in name or Jinja file."),
    exit_with_parent: bool = typer.Option(
        False, "--exit-with-parent", help="Exit when stdin closes (used by the gateway)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="Log verbosity."),
) -> None:
    """Serve one GGUF model over the OpenAI API on a unix socket or a TCP port."""
    from somner.engine.runtime import EngineConfig
    from somner.engine.server import run_worker

    if (socket is None) == (port is None):
        typer.echo("error: give exactly one of --socket or --port", err=True)
        raise typer.Exit(2)
    name = model_id or model.stem
    if not is_valid_model_name(name):
        typer.echo(f"error: {name!r} is not a valid model id; pass --id", err=True)
        raise typer.Exit(2)
    configure_logging(log_level)
    logging.getLogger(__name__).info("worker %s starting (pid %d)", name, os.getpid())
    config = EngineConfig(
        model_path=model,
        model_id=name,
        ctx=ctx,
        parallel=parallel,
        threads=threads,
        batch=batch,
        gpu_layers=gpu_layers,
        cpu_repack=cpu_repack,
        template=template,
    )
    status = run_worker(
        config,
        socket_path=str(socket) if socket is not None else None,
        host=host,
        port=port,
        exit_with_parent=exit_with_parent,
    )
    raise typer.Exit(status)
