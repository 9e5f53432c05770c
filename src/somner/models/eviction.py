"""Which loaded models to unload so another can load: a pure decision, tested on its own.

The manager performs whatever this decides. Memory is a footprint per resource (RAM, each GPU: see placement.py),
and each resource has its own budget. Rules, in order:
1. A model that could never fit the budgets on its own is refused (`too_large`).
2. Members of the newcomer's exclusive group must go.
3. Then, while the model count would exceed `max_loaded` or some resource would exceed its budget, models go in
   this order: idle ones, least recently used first, then busy ones, least recently used first (only models that
   hold some of an exceeded resource: unloading another GPU's model makes no room). Pinned models never go.
4. If that is still not enough (pinned models, models already leaving), the newcomer waits (`wait`).
5. With `keep_busy` (swap-aware scheduling), models serving requests are not chosen: the newcomer waits while
   they are in use, so one load serves a batch of requests instead of one (the manager bounds that wait).
A chosen model that is busy is not cut off: the manager stops giving it new requests, lets the ones in flight
finish, and unloads it then ("drain"). So a swap never fails a request, and a model in demand cannot starve
another one forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from somner.models.placement import Footprint, combined, first_excess


@dataclass(frozen=True, slots=True)
class Resident:
    """A model that holds (or is about to hold) memory."""

    id: str
    memory: Footprint
    in_flight: int
    last_used: float
    pinned: bool = False
    group: str | None = None
    leaving: bool = False  # already being unloaded: counts until it is gone, never chosen again


@dataclass(frozen=True, slots=True)
class Newcomer:
    id: str
    memory: Footprint
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
    budget: Mapping[str, int],
    max_loaded: int | None,
    exclusive_groups: frozenset[str],
    keep_busy: bool = False,
) -> Decision:
    excess = first_excess(newcomer.memory, budget)
    if excess is not None:
        return Decision(too_large=True, reason=f"it needs {excess}")
    others = [r for r in residents if r.id != newcomer.id]
    evict: list[Resident] = []
    if newcomer.group is not None and newcomer.group in exclusive_groups:
        for r in others:
            if r.group == newcomer.group and not r.leaving:
                if r.pinned:
                    return Decision(wait=True, reason=f"{r.id} is pinned in the exclusive group {r.group}")
                evict.append(r)
    staying = [r for r in others if r not in evict]

    def exceeded() -> set[str] | None:
        """What is over: the resources over budget, an empty set for too many models; None when all is fine."""
        used = combined([*(r.memory for r in staying), newcomer.memory])
        over = {resource for resource, amount in used.items() if amount > budget.get(resource, 0)}
        if over:
            return over
        count = sum(1 for r in staying if not r.leaving) + 1
        return set() if max_loaded is not None and count > max_loaded else None

    movable = [r for r in staying if not r.leaving and not r.pinned]
    held = [r for r in movable if keep_busy and r.in_flight > 0]
    candidates = sorted((r for r in movable if r not in held), key=lambda r: (r.in_flight > 0, r.last_used))
    while (over := exceeded()) is not None:
        victim = next((r for r in candidates if not over or any(r.memory.get(res, 0) > 0 for res in over)), None)
        if victim is None:
            if held:
                return Decision(wait=True, reason="the loaded models are serving requests (grouping by model)")
            return Decision(wait=True, reason="the other loaded models are pinned or already leaving")
        candidates.remove(victim)
        evict.append(victim)
        staying.remove(victim)
    return Decision(evict=[r.id for r in evict])
