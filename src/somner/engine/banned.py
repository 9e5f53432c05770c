"""Banned strings: text held back while it could still become a banned string, and where to go back to when one
is completed.

Pure and per sequence. The scheduler pushes each sampled token's text (what the UTF-8 decoder released for it);
`BannedStrings` releases text only up to a token boundary before anything that could be the start of a banned
string, so a banned string never reaches a client, even when it spans tokens. When the held text does contain one,
`push` says how many of the held tokens to keep: the scheduler rewinds the sequence to the token where the banned
string began (its cache, sampler history and the held text) and bans that token at that position.

Matching is case-insensitive, as in KoboldCpp's phrase bans and ExLlamaV2's banned strings (TabbyAPI): "Hello"
bans "hello" and "HELLO". Letters whose lower case is longer than one character are compared as they are.
Rewind points are token boundaries where the decoder holds no partial character, so the text kept before the
point is exactly what those tokens decoded to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from somner.core import TokenLogprob


def fold(text: str) -> str:
    """Lower case, character for character (so offsets in the folded text are offsets in the text)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


@dataclass(slots=True)
class _Held:
    start: int  # where this token's text begins in the held text
    whole: bool  # the decoder holds no partial character after this token (a clean boundary follows it)
    logprobs: list[TokenLogprob] | None


@dataclass(slots=True)
class Released:
    """Text (and the log-probabilities of the tokens that made it) that can go to the client."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)


class BannedStrings:
    """The held tail of one sequence's output. `base` is the index (among generated tokens) of the first held one."""

    __slots__ = ("_banned", "_held", "_longest", "_text", "base")

    def __init__(self, banned: list[str]) -> None:
        self._banned = sorted({fold(b) for b in banned if b})
        self._longest = max((len(b) for b in self._banned), default=0)
        self._text = ""
        self._held: list[_Held] = []
        self.base = 0

    @property
    def held_tokens(self) -> int:
        return len(self._held)

    def push(self, text: str, *, whole: bool, logprobs: list[TokenLogprob] | None) -> Released | int:
        """Add one token's text. Returns what can be released now, or (an int) how many held tokens to keep: a
        banned string was completed, and it began in the token after those."""
        self._held.append(_Held(len(self._text), whole, logprobs))
        self._text += text
        folded = fold(self._text)
        hit = self._first_ban(folded)
        if hit is not None:
            keep = self._boundary_at_or_before(hit)
            self._cut(keep)
            return keep
        return self._release(self._boundary_at_or_before(self._first_possible_start(folded)))

    def flush(self) -> Released:
        """The end of the sequence: whatever is held can no longer become a banned string."""
        return self._release(len(self._held))

    def _first_ban(self, folded: str) -> int | None:
        found = [at for at in (folded.find(b) for b in self._banned) if at != -1]
        return min(found) if found else None

    def _first_possible_start(self, folded: str) -> int:
        """The earliest offset whose tail is a proper beginning of a banned string (or the end of the text)."""
        for at in range(max(0, len(folded) - self._longest + 1), len(folded)):
            tail = folded[at:]
            if any(b.startswith(tail) for b in self._banned):
                return at
        return len(folded)

    def _offset(self, boundary: int) -> int:
        return self._held[boundary].start if boundary < len(self._held) else len(self._text)

    def _boundary_at_or_before(self, offset: int) -> int:
        """The last clean token boundary whose text offset is at most `offset` (0, the start, always is one)."""
        for boundary in range(len(self._held), 0, -1):
            if self._held[boundary - 1].whole and self._offset(boundary) <= offset:
                return boundary
        return 0

    def _release(self, boundary: int) -> Released:
        if boundary == 0:
            return Released()
        offset = self._offset(boundary)
        out = Released(self._text[:offset], [lp for h in self._held[:boundary] for lp in h.logprobs or []])
        self._text = self._text[offset:]
        self._held = [_Held(h.start - offset, h.whole, h.logprobs) for h in self._held[boundary:]]
        self.base += boundary
        return out

    def _cut(self, keep: int) -> None:
        """Forget the held tokens from `keep` on (the sequence is going back to before them)."""
        self._text = self._text[: self._offset(keep)]
        del self._held[keep:]
