"""Which loaded models to unload so another can load: a pure decision, tested on its own.

The manager performs whatever this decides. Rules, in order:
1. A model that could never fit the budget on its own is refused (`too_large`).
2. Members of the newcomer's exclusive group must go.
3. Then, while the model count would exceed `max_loaded` or memory would exceed the budget, models go in this
   order: idle ones, least recently used first, then busy ones, least recently used first. Pinned models never go.
4. If that is still not enough (pinned models, models already leaving), the newcomer waits (`wait`).
A chosen model that is busy is not cut off: the manager stops giving it new requests, lets the ones in flight
finish, and unloads it then ("drain"). So a swap never fails a request, and a model in demand cannot starve
another one forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Resident:
    """A model that holds (or is about to hold) memory."""

    id: str
    bytes: int
    in_flight: int
    last_used: float
    pinned: bool = False
    group: str | None = None
    leaving: bool = False  # already being unloaded: counts until it is gone, never chosen again


@dataclass(frozen=True, slots=True)
class Newcomer:
    id: str
    bytes: int
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    evict: list[str] = field(default_factory=list)
    wait: bool = False  # not possible now; retry when a model finishes a request or unloads
    too_large: bool = False  # never possible
    reason: str = ""


def plan(
    residents: list[Resident],
    newcomer: Newcomer,
    *,
    budget: int,
    max_loaded: int | None,
    exclusive_groups: frozenset[str],
) -> Decision:
    if newcomer.bytes > budget:
        return Decision(too_large=True, reason=f"it needs {newcomer.bytes} bytes and the budget is {budget}")
    others = [r for r in residents if r.id != newcomer.id]
    evict: list[Resident] = []
    if newcomer.group is not None and newcomer.group in exclusive_groups:
        for r in others:
            if r.group == newcomer.group and not r.leaving:
                if r.pinned:
                    return Decision(wait=True, reason=f"{r.id} is pinned in the exclusive group {r.group}")
                evict.append(r)
    staying = [r for r in others if r not in evict]

    def over() -> bool:
        count = sum(1 for r in staying if not r.leaving) + 1
        used = sum(r.bytes for r in staying) + newcomer.bytes
        return (max_loaded is not None and count > max_loaded) or used > budget

    candidates = sorted(
        (r for r in staying if not r.leaving and not r.pinned), key=lambda r: (r.in_flight > 0, r.last_used)
    )
    while over() and candidates:
        victim = candidates.pop(0)
        evict.append(victim)
        staying.remove(victim)
    if over():
        return Decision(wait=True, reason="the other loaded models are pinned or already leaving")
    return Decision(evict=[r.id for r in evict])
