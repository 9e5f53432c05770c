"""Incremental UTF-8 decoding and stop strings with holdback (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from somner.engine.text import IncrementalDecoder, StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_stop_split_across_pieces_is_honoured_and_never_leaks() -> None:
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("hello </") == ("hello ", False)  # "</" held back
    assert matcher.feed("en") == ("", False)
    assert matcher.feed("d> more") == ("", True)
    assert matcher.feed("ignored") == ("", True)
    assert matcher.flush() == ""


def test_false_alarm_is_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("ST") == ("", False)
    assert matcher.feed("AR") == ("STAR", False)


def test_held_text_is_flushed_at_the_end() -> None:
    assert run(["###"], ["a", "#", "#"]) == ("a##", False)


def test_earliest_stop_wins() -> None:
    assert run(["bb", "a"], ["xxbba"]) == ("xx", True)


def test_no_stops_passes_through() -> None:
    assert run([], ["a", "b"]) == ("ab", False)


@given(st.text(max_size=40), st.text(min_size=1, max_size=5), st.lists(st.integers(1, 7), max_size=20))
def test_matches_a_whole_string_search(text: str, stop: str, cuts: list[int]) -> None:
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(text[pos : pos + cut])
        pos += cut
    pieces.append(text[pos:])
    out, stopped = run([stop], pieces)
    at = text.find(stop)
    if at == -1:
        assert (out, stopped) == (text, False)
    else:
        assert (out, stopped) == (text[:at], True)


def test_decoder_holds_split_characters() -> None:
    decoder = IncrementalDecoder()
    data = "héllo 🌊".encode()
    out = "".join(decoder.feed(data[i : i + 1]) for i in range(len(data)))
    assert out + decoder.flush() == "héllo 🌊"
    wave = "🌊".encode()
    decoder = IncrementalDecoder()
    assert decoder.feed(wave[:2]) == ""
    assert decoder.feed(wave[2:]) == "🌊"


def test_decoder_replaces_invalid_bytes() -> None:
    decoder = IncrementalDecoder()
    assert decoder.feed(b"a\xffb") == "a\ufffdb"
    assert decoder.feed(b"\xe2\x82") == ""
    assert decoder.flush() == "\ufffd"
