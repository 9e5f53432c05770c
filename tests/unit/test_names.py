from __future__ import annotations

import pytest

from somner.models.names import is_valid_model_name, validate_model_name


@pytest.mark.parametrize("name", ["gemma-3-270m-q4_k_m", "llama3:8b", "Qwen2.5-7B", "a", "m.v1"])
def test_valid_names(name: str) -> None:
    assert is_valid_model_name(name)
    assert validate_model_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "../etc/passwd", "a/b", "a\\b", "..", "x..y", ".hidden", "-x", "a b", "x" * 129, "/abs", "a\x00b"]
)
def test_invalid_names(name: str) -> None:
    assert not is_valid_model_name(name)
    with pytest.raises(ValueError, match="invalid model name"):
        validate_model_name(name)


def test_non_string_is_invalid() -> None:
    with pytest.raises(ValueError, match="string"):
        validate_model_name(42)
