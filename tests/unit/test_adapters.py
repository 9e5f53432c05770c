"""Which LoRA scale set a scheduling step decodes, and when the context's scales are switched."""

from __future__ import annotations

from somner.engine.adapters import AdapterScales, Scales, step_scales


def test_one_set_is_every_step() -> None:
    assert step_scales([], 0) is None
    waiting = [((1.0,), 2.0), ((1.0,), 1.0)]
    assert [step_scales(waiting, turn) for turn in range(3)] == [(1.0,)] * 3


def test_several_sets_take_turns_oldest_request_first() -> None:
    waiting = [((0.0,), 5.0), ((1.0,), 3.0), ((0.5,), 4.0), ((1.0,), 9.0)]
    assert [step_scales(waiting, turn) for turn in range(4)] == [(1.0,), (0.5,), (0.0,), (1.0,)]


def test_the_context_switches_only_when_the_set_changes() -> None:
    applied: list[Scales] = []
    scales = AdapterScales(applied.append, (1.0, 0.0))
    for wanted in [(1.0, 0.0), (0.0, 0.0), (0.0, 0.0), (1.0, 0.0), ()]:
        scales.use(wanted)
    assert applied == [(0.0, 0.0), (1.0, 0.0)] and scales.switches == 2
