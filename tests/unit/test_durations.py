from __future__ import annotations

import pytest

from somner.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (300, 300.0),
        (1.5, 1.5),
        ("300", 300.0),
        ("300s", 300.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("-1", -1.0),
        ("-5m", -300.0),
        (" 10 s ", 10.0),
    ],
)
def test_parses_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "5 minutes", "m5", "1x", "1h-5m", None, True, [], "--5", "inf", "nan", "1e3", float("inf")]
)
def test_rejects_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"), [(300.0, "5m"), (3600.0, "1h"), (90.0, "90s"), (0.5, "0.5s"), (-60, "-1m")]
)
def test_formats_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
