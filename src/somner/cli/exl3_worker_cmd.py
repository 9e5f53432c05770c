"""`somner worker-exl3`: serve one EXL3 model folder with ExLlamaV3 (the gateway starts these for `backend:
exllamav3` models)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import cast

import typer

from somner.models.names import is_valid_model_name
from somner.observability.logging import configure_logging

_CACHE_TYPES = ("f16", "q8_0", "q6", "q4_0")


def worker_exl3(
    model: Path = typer.Option(..., "--model", help="EXL3 model folder to serve.", file_okay=False),
    socket: Path | None = typer.Option(None, "--socket", help="Serve on this unix socket."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="Serve on this TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address for --port."),
    model_id: str | None = typer.Option(None, "--id", help="Model id to report (default: the folder's name)."),
    ctx: int | None = typer.Option(None, "--ctx", min=256, help="Context tokens per sequence (max_seq_len)."),
    parallel: int = typer.Option(4, "--parallel", min=1, max=256, help="Sequences generated together."),
    batch: int = typer.Option(2048, "--batch", min=32, help="Prompt tokens per prefill step."),
    cache_size: int | None = typer.Option(
        None, "--cache-size", min=256, help="KV cache tokens shared by all sequences (default: ctx x parallel)."
    ),
    cache_type_k: str = typer.Option("f16", "--cache-type-k", help="Keys' cache: f16, q8_0, q6 or q4_0."),
    cache_type_v: str = typer.Option("f16", "--cache-type-v", help="Values' cache: f16, q8_0, q6 or q4_0."),
    template: str | None = typer.Option(None, "--template", help="Chat template: built-in name or Jinja file."),
    draft_model: Path | None = typer.Option(
        None, "--draft-model", help="Speculative decoding: an EXL3 folder with the same vocabulary.", file_okay=False
    ),
    draft_tokens: int = typer.Option(4, "--draft-tokens", min=1, max=32, help="Tokens the draft model guesses."),
    lora: list[str] = typer.Option([], "--lora", help="LoRA adapter folder as PATH or PATH=SCALE (repeatable)."),
    gpu_split: str | None = typer.Option(None, "--gpu-split", help="Comma-separated GB per GPU (default: autosplit)."),
    tensor_parallel: bool = typer.Option(False, "--tensor-parallel", help="Split every layer across the GPUs."),
    exit_with_parent: bool = typer.Option(
        False, "--exit-with-parent", help="Exit when stdin closes (used by the gateway)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="Log verbosity."),
) -> None:
    """Serve one EXL3 model folder with ExLlamaV3 over the OpenAI API (needs somner[exl3] and a CUDA GPU)."""
    from somner.exl3.generator import CacheType, Exl3Config
    from somner.exl3.worker import run_exl3_worker

    if (socket is None) == (port is None):
        typer.echo("error: give exactly one of --socket or --port", err=True)
        raise typer.Exit(2)
    name = model_id or model.name
    if not is_valid_model_name(name):
        typer.echo(f"error: {name!r} is not a valid model id; pass --id", err=True)
        raise typer.Exit(2)
    if cache_type_k not in _CACHE_TYPES or cache_type_v not in _CACHE_TYPES:
        typer.echo(f"error: --cache-type-k and --cache-type-v are {', '.join(_CACHE_TYPES)}", err=True)
        raise typer.Exit(2)
    try:
        split = tuple(float(x) for x in gpu_split.split(",")) if gpu_split else ()
        loras = tuple(_adapter(value) for value in lora)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(log_level)
    logging.getLogger(__name__).info("exllamav3 worker %s starting (pid %d)", name, os.getpid())
    config = Exl3Config(
        model_path=model,
        model_id=name,
        max_seq_len=ctx,
        cache_size=cache_size,
        cache_k=cast(CacheType, cache_type_k),
        cache_v=cast(CacheType, cache_type_v),
        max_batch_size=parallel,
        chunk_size=batch,
        template=template,
        draft_model=draft_model,
        draft_tokens=draft_tokens,
        loras=loras,
        gpu_split=split,
        tensor_parallel=tensor_parallel,
    )
    status = run_exl3_worker(
        config,
        socket_path=str(socket) if socket is not None else None,
        host=host,
        port=port,
        exit_with_parent=exit_with_parent,
    )
    raise typer.Exit(status)


def _adapter(value: str) -> tuple[Path, float]:
    path, _, scale = value.partition("=")
    try:
        return Path(path), float(scale) if scale else 1.0
    except ValueError:
        raise ValueError(f"--lora {value!r}: the scale after '=' must be a number") from None
