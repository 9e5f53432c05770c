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
    swa_full: bool = typer.Option(False, "--swa-full", help="Full-size cache for sliding-window layers."),
    template: str | None = typer.Option(None, "--template", help="Chat template: built-in name or Jinja file."),
    cache_type: str = typer.Option("f16", "--cache-type", help="KV cache precision: f16, q8_0 or q4_0."),
    cache_type_k: str | None = typer.Option(None, "--cache-type-k", help="The keys' precision (over --cache-type)."),
    cache_type_v: str | None = typer.Option(
        None, "--cache-type-v", help="The values' precision (over --cache-type; quantized needs flash attention)."
    ),
    split_mode: str = typer.Option("layer", "--split-mode", help="Over several GPUs: none, layer or row."),
    main_gpu: int = typer.Option(0, "--main-gpu", min=0, help="The GPU for split mode none."),
    flash_attn: str = typer.Option("auto", "--flash-attn", help="Flash attention: auto, on or off."),
    rope_base: float = typer.Option(0.0, "--rope-base", help="RoPE frequency base (0: from the model)."),
    rope_scale: float = typer.Option(0.0, "--rope-scale", help="RoPE frequency scale (0: from the model)."),
    tensor_split: str | None = typer.Option(None, "--tensor-split", help="Comma-separated shares per GPU."),
    lora: list[str] = typer.Option([], "--lora", help="LoRA adapter as PATH or PATH=SCALE (repeatable)."),
    mode: str = typer.Option("both", "--mode", help="both, generate (no embeddings) or embed (embeddings only)."),
    draft_model: Path | None = typer.Option(
        None, "--draft-model", help="Speculative decoding: a small GGUF with the same vocabulary.", dir_okay=False
    ),
    draft_tokens: int = typer.Option(4, "--draft-tokens", min=1, max=32, help="Most guesses per sequence and step."),
    mmproj: Path | None = typer.Option(
        None, "--mmproj", help="Vision: the model's multimodal projector GGUF (images in chat).", dir_okay=False
    ),
    exit_with_parent: bool = typer.Option(
        False, "--exit-with-parent", help="Exit when stdin closes (used by the gateway)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="Log verbosity."),
    no_tracebacks: bool = typer.Option(
        False, "--no-tracebacks", help="Log an exception's type, never its traceback (privacy: strict)."
    ),
) -> None:
    """Serve one GGUF model over the OpenAI API on a unix socket or a TCP port."""
    from somner.engine.config import EngineConfig

    if (socket is None) == (port is None):
        typer.echo("error: give exactly one of --socket or --port", err=True)
        raise typer.Exit(2)
    name = model_id or model.stem
    if not is_valid_model_name(name):
        typer.echo(f"error: {name!r} is not a valid model id; pass --id", err=True)
        raise typer.Exit(2)
    cache_types = {cache_type, cache_type_k or cache_type, cache_type_v or cache_type}
    if not cache_types <= {"f16", "q8_0", "q4_0"} or mode not in ("both", "generate", "embed"):
        typer.echo("error: cache types are f16, q8_0 or q4_0; --mode is both, generate or embed", err=True)
        raise typer.Exit(2)
    if split_mode not in ("none", "layer", "row") or flash_attn not in ("auto", "on", "off"):
        typer.echo("error: --split-mode is none, layer or row; --flash-attn is auto, on or off", err=True)
        raise typer.Exit(2)
    try:
        split = tuple(float(x) for x in tensor_split.split(",")) if tensor_split else ()
        loras = tuple(_lora(value) for value in lora)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(log_level, tracebacks=not no_tracebacks)
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
        swa_full=swa_full,
        template=template,
        cache_type_k=cache_type_k or cache_type,
        cache_type_v=cache_type_v or cache_type,
        split_mode=split_mode,  # type: ignore[arg-type]
        main_gpu=main_gpu,
        flash_attn=flash_attn,  # type: ignore[arg-type]
        rope_base=rope_base,
        rope_scale=rope_scale,
        tensor_split=split,
        loras=loras,
        mode=mode,  # type: ignore[arg-type]
        draft_model=draft_model,
        draft_tokens=draft_tokens,
        mmproj=mmproj,
    )
    # The model loads (in C, without the GIL) while the engine and its HTTP server are imported.
    from somner.engine.preload import LoadProgress, ModelPreload

    preloaded = ModelPreload(config, LoadProgress())
    from somner.engine.server import exit_now, run_worker

    status = run_worker(
        config,
        socket_path=str(socket) if socket is not None else None,
        host=host,
        port=port,
        exit_with_parent=exit_with_parent,
        preloaded=preloaded,
    )
    exit_now(status)  # (the engine is closed and its socket gone)


def _lora(value: str) -> tuple[Path, float]:
    path, _, scale = value.partition("=")
    try:
        return Path(path), float(scale) if scale else 1.0
    except ValueError:
        raise ValueError(f"--lora {value!r}: the scale after '=' must be a number") from None


def standalone(args: list[str]) -> None:
    """Run `somner worker` with only this module imported (see somner/__main__.py)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(worker)
    app(args=args, prog_name="somner worker")
