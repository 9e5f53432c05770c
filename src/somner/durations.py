"""Durations as people write them in configuration: `300`, `300s`, `1.5s`, `500ms`, `5m`, `1h`, `1h30m`, `2d`."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds as a float. A bare number means seconds; a leading `-` negates (keep-alive "forever")."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '1h'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be finite")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '1h'")
    text = value.strip().lower().replace(" ", "")
    sign = 1.0
    if text.startswith("-"):
        sign, text = -1.0, text[1:]
    if not text or not (text[0].isdigit() or text[0] == "."):
        raise ValueError(f"invalid duration {value!r}: use seconds or a string like '30s', '5m', '1h30m'")
    if _NUMBER.fullmatch(text):
        return sign * float(text)
    total, pos = 0.0, 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {value!r}: use seconds or a string like '30s', '5m', '1h30m'")
    return sign * total


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for `config show` and the example file."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == int(seconds):
        whole = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole and whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    return f"{seconds:g}s"
