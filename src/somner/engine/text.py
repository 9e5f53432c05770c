"""Turning sampled tokens into client text: UTF-8-safe incremental decoding and stop strings with holdback.

Both are pure and per sequence. A token may end in the middle of a UTF-8 character (byte-fallback tokens), and
a stop string may be split across tokens, so text is released only once it can no longer change:
`IncrementalDecoder` holds incomplete characters, `StopMatcher` holds a tail that could still begin a stop string.
"""

from __future__ import annotations

import codecs


class IncrementalDecoder:
    """Bytes in, complete characters out."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    @property
    def pending(self) -> bool:
        """Whether it holds the first bytes of a character that has not been completed yet."""
        buffered, _flag = self._decoder.getstate()
        return bool(buffered)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds the first stop string in a stream of text.

    `feed` returns the text that is safe to emit and whether a stop string was found; text after (and
    including) the stop string is never returned. `flush` releases the held-back tail at the end of a stream.
    """

    __slots__ = ("_held", "_max_len", "_stops", "matched", "stopped")

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._max_len = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that was found

    def feed(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self._stops:
            return text, False
        pending = self._held + text
        first = -1
        for stop in self._stops:
            at = pending.find(stop)
            if at != -1 and (first == -1 or at < first):
                first, self.matched = at, stop
        if first != -1:
            self._held = ""
            self.stopped = True
            return pending[:first], True
        keep = self._holdback(pending)
        self._held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep], False

    def _holdback(self, pending: str) -> int:
        """Length of the longest tail of `pending` that is a proper prefix of some stop string."""
        longest = min(len(pending), self._max_len - 1)
        for size in range(longest, 0, -1):
            tail = pending[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held
