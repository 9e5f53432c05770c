"""LoRA adapters per request: one llama.cpp context, one set of adapter scales per decode.

llama.cpp applies adapters to a whole context (`llama_set_adapters_lora`), not to a sequence, so sequences whose
requests asked for different scales cannot share a decode. The scheduler serves them in turns instead: each step
decodes only the sequences of one scale set (`step_scales`: the only one when all agree, else each set in turn,
oldest request's first), and the context's scales are switched only when the step's set differs from the last
(`AdapterScales.use`). A sequence's cached prefix counts only for a request with the same scales (its keys and
values were computed with them). Without adapters every job has the empty set and none of this costs anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Scales = tuple[float, ...]


def step_scales(waiting: Sequence[tuple[Scales, float]], turn: int) -> Scales | None:
    """The scale set this step decodes, from (scales, started_at) of each sequence with work; None when none has.
    With several sets, `turn` picks one (rotating over them in the order of their oldest request)."""
    if not waiting:
        return None
    first = waiting[0][0]
    if all(scales == first for scales, _ in waiting):
        return first
    oldest: dict[Scales, float] = {}
    for scales, started in waiting:
        if scales not in oldest or started < oldest[scales]:
            oldest[scales] = started
    ordered = sorted(oldest, key=lambda scales: oldest[scales])
    return ordered[turn % len(ordered)]


class AdapterScales:
    """The scales applied to the context now; `use` switches them when a step needs others."""

    def __init__(self, apply: Callable[[Scales], None], initial: Scales) -> None:
        self._apply = apply
        self.applied = initial
        self.switches = 0

    def use(self, scales: Scales) -> None:
        if scales != self.applied and scales:
            self._apply(scales)
            self.applied = scales
            self.switches += 1
