"""How much context one generation of a model gets, known without starting its engine."""

from __future__ import annotations

import functools
from pathlib import Path

from somner.models import exl3
from somner.models.gguf import GGUFError, read_gguf
from somner.models.registry import ModelSpec

DEFAULT_CONTEXT = 4096
"""A model's context when neither its configuration (`ctx`) nor its GGUF says otherwise; Somner's worker caps
the training context at this too."""


@functools.lru_cache(maxsize=32)
def _trained_context(path: Path, mtime_ns: int, size: int) -> int | None:
    """The GGUF's training context (cached per file version: reading the header walks the whole vocabulary)."""
    del mtime_ns, size  # part of the cache key only
    try:
        return read_gguf(path).context_length
    except GGUFError:
        return None


def model_context(spec: ModelSpec) -> int:
    """The context, in tokens, that one generation of `spec` gets: its configured `ctx`, else its training
    context capped at `DEFAULT_CONTEXT` (as the worker sizes it), else `DEFAULT_CONTEXT`."""
    if spec.ctx is not None:
        return spec.ctx
    if spec.path is not None and spec.kind == "exllamav3":
        try:
            return exl3.context_of(exl3.read_exl3_folder(spec.path), None)
        except (exl3.Exl3FolderError, OSError):
            return DEFAULT_CONTEXT
    if spec.path is not None and spec.kind == "worker":
        try:
            stat = spec.path.stat()
        except OSError:
            return DEFAULT_CONTEXT
        trained = _trained_context(spec.path, stat.st_mtime_ns, stat.st_size)
        return min(trained or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
    return DEFAULT_CONTEXT
