"""Counting what the generated requests got back: a status histogram per suite and dialect, and every answer that
breaks a promise (a 5xx, no answer within the request timeout, an error not in the dialect's shape)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Statuses the HTTP layer answers itself, before any route (plain text, not a dialect's shape): a request head it
# cannot parse (400), too slow (408) or too large (431).
PROTOCOL_STATUSES = frozenset({400, 408, 431})


@dataclass
class Tally:
    suite: str
    dialect: str
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per kind (where the suite's time goes)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def record(self, kind: str, outcome: int | str, problem: str | None = None) -> None:
        self.statuses[str(outcome)] += 1
        self.kinds[kind] += 1
        if problem is not None and len(self.failures) < 50:
            self.failures.append(f"{kind}: {problem}")

    def timed(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    def line(self) -> str:
        histogram = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        return f"{self.suite:<12} {self.dialect:<10} {self.requests:>6} requests  {{{histogram}}}"


@dataclass
class Report:
    """Every tally of the session, printed at its end (and written to SOMNER_FUZZ_REPORT when set)."""

    tallies: list[Tally] = field(default_factory=list)

    def new(self, suite: str, dialect: str) -> Tally:
        tally = Tally(suite, dialect)
        self.tallies.append(tally)
        return tally

    def lines(self) -> list[str]:
        return [tally.line() for tally in self.tallies]

    def write(self) -> None:
        target = os.environ.get("SOMNER_FUZZ_REPORT")
        if not target:
            return
        data = [
            {
                "suite": t.suite,
                "dialect": t.dialect,
                "requests": t.requests,
                "statuses": dict(t.statuses),
                "kinds": dict(t.kinds),
                "failures": t.failures,
                "slowest": [[k, round(s, 2)] for k, s in sorted(t.seconds.items(), key=lambda i: -i[1])[:10]],
            }
            for t in self.tallies
        ]
        Path(target).write_text(json.dumps(data, indent=2), encoding="utf-8")
