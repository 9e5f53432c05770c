from __future__ import annotations

import builtins
import hashlib
from pathlib import Path
from typing import Any

import pytest

from somner.models import default_model
from somner.models.default_model import DefaultModelUnavailable, ensure_default_model


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_assembles_once_with_progress_and_verifies(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    path = ensure_default_model(tmp_path / "models", lambda done, total: seen.append((done, total)))
    assert path.name == "gemma-3-270m-q4_k_m.gguf"
    assert sha256(path) == default_model._package().EXPECTED_SHA256
    assert seen and seen[-1][0] == seen[-1][1] == path.stat().st_size
    assert not list(path.parent.glob(".*partial"))
    mtime = path.stat().st_mtime_ns
    assert ensure_default_model(tmp_path / "models") == path
    assert path.stat().st_mtime_ns == mtime  # already there: not rewritten


def test_a_damaged_copy_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    target.write_bytes(b"GGUF damaged")
    path = ensure_default_model(tmp_path)
    assert sha256(path) == default_model._package().EXPECTED_SHA256


def test_missing_package_explains_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(default_model.PACKAGE):
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr("somner.models.default_model.importlib.import_module", fake_import)
    with pytest.raises(DefaultModelUnavailable) as info:
        ensure_default_model(tmp_path)
    message = str(info.value)
    assert "pip install" in message and "--model" in message
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = default_model._package()
    monkeypatch.setattr(package, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(DefaultModelUnavailable, match="SHA-256"):
        ensure_default_model(tmp_path)
    assert list(tmp_path.iterdir()) == []
