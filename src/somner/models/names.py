"""Model names as clients send them. A name is an identifier, never a path: it is looked up in the registry and
never joined onto a directory, so no request can make Somner open a file of its choosing."""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def is_valid_model_name(value: str) -> bool:
    return bool(_NAME.fullmatch(value)) and ".." not in value


def validate_model_name(value: object) -> str:
    """For pydantic validators: the name, or ValueError saying what is allowed."""
    if not isinstance(value, str):
        raise ValueError("a model name is a string")
    if not is_valid_model_name(value):
        raise ValueError(
            f"invalid model name {value!r}: use 1-128 letters, digits, '.', '_', '-' or ':', "
            "starting with a letter or digit, with no '..' and no path separators"
        )
    return value
