"""Changing what the models directory holds, for clients that manage models (Ollama's copy and delete).

An alias is added to, or removed from, the `aliases` of the model's own file `<models_dir>/<id>.yaml` (created if
need be; its other settings are kept), which the registry merges over the model's other sources. Because a list
in that file replaces the list from the main configuration, the file is always written with the model's whole
alias list. Every write goes to a hidden temporary file (the registry skips hidden files) that is renamed into
place, under an exclusive lock on `<models_dir>/.library.lock`, so concurrent changes from several gateway
processes never lose one another or leave a half-written file.

Names are checked as model names before they reach a path; ids come from the registry, never from a request.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from somner.models.names import is_valid_model_name


class LibraryError(ValueError):
    """The change cannot be made; the message says why."""


@contextlib.contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / ".library.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def model_file(models_dir: Path, model_id: str) -> Path:
    if not is_valid_model_name(model_id):
        raise LibraryError(f"{model_id!r} is not a model id")
    return models_dir / f"{model_id}.yaml"


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LibraryError(f"{path.name} cannot be read: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LibraryError(f"{path.name} does not hold a mapping of model settings")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as out:
        yaml.safe_dump(data, out, sort_keys=False, allow_unicode=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def set_aliases(models_dir: Path, model_id: str, change: Callable[[list[str]], list[str]]) -> list[str]:
    """Rewrite the model file's alias list as `change(current)` returns it (under the lock); returns it."""
    path = model_file(models_dir, model_id)
    with _locked(models_dir):
        data = _read(path)
        current = data.get("aliases") or []
        if not isinstance(current, list):
            raise LibraryError(f"{path.name}: `aliases` must be a list")
        aliases = change([str(a) for a in current])
        data["aliases"] = aliases
        _write(path, data)
    return aliases


def add_alias(models_dir: Path, model_id: str, alias: str, existing: list[str]) -> list[str]:
    """Make `alias` a name of `model_id`. `existing` is the model's whole alias list as the registry has it now
    (it may come from the main configuration, which the file's list replaces)."""
    if not is_valid_model_name(alias):
        raise LibraryError(
            f"{alias!r} is not a valid model name: use letters, digits, '.', '_', '-' or ':' (no '/' or '..')"
        )
    if alias == model_id:
        raise LibraryError(f"{alias!r} is the model's own id")

    def added(current: list[str]) -> list[str]:
        return list(dict.fromkeys([*existing, *current, alias]))

    return set_aliases(models_dir, model_id, added)


def remove_alias(models_dir: Path, model_id: str, alias: str, existing: list[str]) -> list[str]:
    """Drop `alias` from the model's names (`existing`: its whole alias list as the registry has it now)."""

    def removed(current: list[str]) -> list[str]:
        return [a for a in dict.fromkeys([*existing, *current]) if a != alias]

    return set_aliases(models_dir, model_id, removed)


def delete_model(models_dir: Path, model_id: str, gguf: Path | None) -> list[Path]:
    """Remove a model's files from the models directory: its GGUF (only if it lies directly in the directory)
    and its model file. Returns what was removed; LibraryError if the GGUF lies elsewhere."""
    root = models_dir.resolve()
    removed: list[Path] = []
    with _locked(models_dir):
        if gguf is not None:
            resolved = gguf.resolve()
            if resolved.parent != root:
                raise LibraryError(f"{gguf} is outside the models directory; Somner only deletes files it holds")
            resolved.unlink(missing_ok=True)
            removed.append(resolved)
        path = model_file(models_dir, model_id)
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
