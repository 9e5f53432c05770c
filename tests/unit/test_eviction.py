"""The eviction decision, on its own (a pure function)."""

from __future__ import annotations

from somner.models.eviction import Decision, Newcomer, Resident, plan

GIB = 1024**3


def r(
    model_id: str,
    size: float = 1,
    *,
    busy: int = 0,
    used: float = 0,
    pinned: bool = False,
    group: str | None = None,
    leaving: bool = False,
) -> Resident:
    return Resident(model_id, int(size * GIB), busy, used, pinned, group, leaving)


def decide(
    residents: list[Resident],
    newcomer: Newcomer,
    budget: float = 10,
    max_loaded: int | None = None,
    exclusive: frozenset[str] = frozenset(),
) -> Decision:
    return plan(residents, newcomer, budget=int(budget * GIB), max_loaded=max_loaded, exclusive_groups=exclusive)


def test_room_to_spare_evicts_nothing() -> None:
    assert decide([r("a"), r("b")], Newcomer("c", GIB)).evict == []


def test_least_recently_used_idle_model_goes_first() -> None:
    residents = [r("old", 4, used=1), r("new", 4, used=5), r("mid", 1, used=3)]
    decision = decide(residents, Newcomer("c", 2 * GIB), budget=10)
    assert decision.evict == ["old"]


def test_max_loaded_counts_models() -> None:
    decision = decide([r("a", used=2), r("b", used=1)], Newcomer("c", GIB), max_loaded=2)
    assert decision.evict == ["b"]


def test_idle_before_busy_and_busy_ones_are_drained_not_refused() -> None:
    residents = [r("busy-old", used=1, busy=3), r("idle-new", used=9)]
    assert decide(residents, Newcomer("c", GIB), max_loaded=2).evict == ["idle-new"]
    assert decide(residents, Newcomer("c", GIB), max_loaded=1).evict == ["idle-new", "busy-old"]


def test_pinned_models_never_go() -> None:
    decision = decide([r("pin", 9, pinned=True)], Newcomer("c", 2 * GIB), budget=10)
    assert decision.wait and not decision.evict


def test_models_already_leaving_are_not_chosen_again_but_count_until_gone() -> None:
    decision = decide([r("going", 9, leaving=True)], Newcomer("c", 2 * GIB), budget=10)
    assert decision.wait
    assert decide([r("going", 9, leaving=True)], Newcomer("c", GIB), budget=10).evict == []


def test_too_large_is_refused_outright() -> None:
    decision = decide([], Newcomer("huge", 11 * GIB), budget=10)
    assert decision.too_large and "budget" in decision.reason


def test_exclusive_group_members_go_even_with_room() -> None:
    residents = [r("g1", group="gpu", used=5), r("g2", group="gpu", used=6), r("other", group=None)]
    decision = decide(residents, Newcomer("g3", GIB, "gpu"), exclusive=frozenset({"gpu"}))
    assert sorted(decision.evict) == ["g1", "g2"]
    shared = decide(residents, Newcomer("g3", GIB, "gpu"), exclusive=frozenset())
    assert shared.evict == []


def test_newcomer_already_resident_is_not_its_own_victim() -> None:
    assert decide([r("c", 5)], Newcomer("c", 5 * GIB), budget=6).evict == []
