"""The eviction decision, on its own (a pure function)."""

from __future__ import annotations

from somner.models.eviction import Decision, Newcomer, Resident, plan
from somner.models.placement import RAM

GIB = 1024**3


def ram(size: float) -> dict[str, int]:
    return {RAM: int(size)}


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
    return Resident(model_id, ram(size * GIB), busy, used, pinned, group, leaving)


def decide(
    residents: list[Resident],
    newcomer: Newcomer,
    budget: float = 10,
    max_loaded: int | None = None,
    exclusive: frozenset[str] = frozenset(),
) -> Decision:
    limits = {RAM: int(budget * GIB)}
    return plan(residents, newcomer, budget=limits, max_loaded=max_loaded, exclusive_groups=exclusive)


def test_room_to_spare_evicts_nothing() -> None:
    assert decide([r("a"), r("b")], Newcomer("c", ram(GIB))).evict == []


def test_least_recently_used_idle_model_goes_first() -> None:
    residents = [r("old", 4, used=1), r("new", 4, used=5), r("mid", 1, used=3)]
    decision = decide(residents, Newcomer("c", ram(2 * GIB)), budget=10)
    assert decision.evict == ["old"]


def test_max_loaded_counts_models() -> None:
    decision = decide([r("a", used=2), r("b", used=1)], Newcomer("c", ram(GIB)), max_loaded=2)
    assert decision.evict == ["b"]


def test_idle_before_busy_and_busy_ones_are_drained_not_refused() -> None:
    residents = [r("busy-old", used=1, busy=3), r("idle-new", used=9)]
    assert decide(residents, Newcomer("c", ram(GIB)), max_loaded=2).evict == ["idle-new"]
    assert decide(residents, Newcomer("c", ram(GIB)), max_loaded=1).evict == ["idle-new", "busy-old"]


def test_pinned_models_never_go() -> None:
    decision = decide([r("pin", 9, pinned=True)], Newcomer("c", ram(2 * GIB)), budget=10)
    assert decision.wait and not decision.evict


def test_models_already_leaving_are_not_chosen_again_but_count_until_gone() -> None:
    decision = decide([r("going", 9, leaving=True)], Newcomer("c", ram(2 * GIB)), budget=10)
    assert decision.wait
    assert decide([r("going", 9, leaving=True)], Newcomer("c", ram(GIB)), budget=10).evict == []


def test_too_large_is_refused_outright() -> None:
    decision = decide([], Newcomer("huge", ram(11 * GIB)), budget=10)
    assert decision.too_large and "budget" in decision.reason


def test_exclusive_group_members_go_even_with_room() -> None:
    residents = [r("g1", group="gpu", used=5), r("g2", group="gpu", used=6), r("other", group=None)]
    decision = decide(residents, Newcomer("g3", ram(GIB), "gpu"), exclusive=frozenset({"gpu"}))
    assert sorted(decision.evict) == ["g1", "g2"]
    shared = decide(residents, Newcomer("g3", ram(GIB), "gpu"), exclusive=frozenset())
    assert shared.evict == []


def test_newcomer_already_resident_is_not_its_own_victim() -> None:
    assert decide([r("c", 5)], Newcomer("c", ram(5 * GIB)), budget=6).evict == []


def test_each_gpu_has_its_own_budget_and_only_its_models_make_room() -> None:
    limits = {RAM: 64 * GIB, "gpu0": 40 * GIB, "gpu1": 40 * GIB}
    on_gpu0 = Resident("a", {RAM: GIB, "gpu0": 30 * GIB}, 0, 1.0)
    on_gpu1 = Resident("b", {RAM: GIB, "gpu1": 30 * GIB}, 0, 0.5)  # used longer ago, but elsewhere
    newcomer = Newcomer("c", {RAM: GIB, "gpu0": 20 * GIB})
    decision = plan([on_gpu0, on_gpu1], newcomer, budget=limits, max_loaded=None, exclusive_groups=frozenset())
    assert decision.evict == ["a"]
    split = Newcomer("d", {RAM: GIB, "gpu0": 5 * GIB, "gpu1": 5 * GIB})
    assert plan([on_gpu0, on_gpu1], split, budget=limits, max_loaded=None, exclusive_groups=frozenset()).evict == []


def test_too_large_for_one_gpu_names_it() -> None:
    limits = {RAM: 64 * GIB, "gpu0": 40 * GIB}
    decision = plan([], Newcomer("x", {"gpu0": 50 * GIB}), budget=limits, max_loaded=None, exclusive_groups=frozenset())
    assert decision.too_large and "GPU 0's memory" in decision.reason and "budget is 40,960 MiB" in decision.reason


def test_keep_busy_holds_models_serving_requests() -> None:
    """Swap-aware scheduling: a busy model is not chosen while the newcomer may still wait for it."""
    busy = r("a", size=6, busy=2)
    idle = r("b", size=3, used=1.0)
    newcomer = Newcomer("c", ram(4 * GIB))
    assert decide([busy, idle], newcomer).evict == ["b"]  # the idle one is enough anyway
    needs_more = Newcomer("c", ram(6 * GIB))
    waited = plan(
        [busy, idle], needs_more, budget={RAM: 10 * GIB}, max_loaded=None, exclusive_groups=frozenset(), keep_busy=True
    )
    assert waited.wait and "serving requests" in waited.reason
    assert waited.evict == []
    assert decide([busy, idle], needs_more).evict == ["b", "a"]  # once the wait is over: the busy one goes too
