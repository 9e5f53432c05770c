"""Banned strings' hold-back and rewind points (pure), and the candidate cuts the engine makes itself."""

from __future__ import annotations

import numpy as np
import pytest

from somner.core import TokenLogprob
from somner.engine.banned import BannedStrings, Released, fold
from somner.engine.sampling import tail_free, top_a


def lp(token: str) -> list[TokenLogprob]:
    return [TokenLogprob(token=token, logprob=-1.0, bytes=list(token.encode()), top=[])]


def push(guard: BannedStrings, text: str, *, whole: bool = True) -> Released | int:
    return guard.push(text, whole=whole, logprobs=lp(text))


def released(result: Released | int) -> str:
    assert isinstance(result, Released), result
    return result.text


def test_text_that_cannot_start_a_ban_passes_at_once() -> None:
    guard = BannedStrings(["dragon"])
    assert released(push(guard, "The ")) == "The "
    assert released(push(guard, "cat")) == "cat"
    assert guard.base == 2 and guard.held_tokens == 0


def test_a_possible_start_is_held_until_it_cannot_be_one() -> None:
    guard = BannedStrings(["dragon"])
    assert released(push(guard, "a dr")) == ""  # held from the token where "dr" begins
    assert released(push(guard, "ag")) == ""
    out = push(guard, "ging")  # "draging": not "dragon" after all
    assert isinstance(out, Released)
    assert out.text == "a drag" + "ging"
    assert [item.token for item in out.logprobs] == ["a dr", "ag", "ging"]


def test_a_completed_ban_says_where_to_go_back_to() -> None:
    guard = BannedStrings(["dragon"])
    assert released(push(guard, "A red ")) == "A red "
    assert released(push(guard, "dra")) == ""
    assert push(guard, "gon") == 0  # went back to the token where "dragon" began: keep 0 held tokens
    assert guard.base == 1 and guard.held_tokens == 0


def test_the_rewind_point_is_the_token_where_the_ban_begins_not_the_one_that_ends_it() -> None:
    guard = BannedStrings(["ab"])
    assert released(push(guard, "xx")) == "xx"
    assert released(push(guard, "ya")) == ""  # "a" could begin "ab": the whole token "ya" is held
    assert released(push(guard, "a")) == "ya"  # now only the last "a" could
    assert guard.base == 2
    assert push(guard, "b") == 0  # "ab" began in the first held token (generated token 2): keep none
    assert guard.held_tokens == 0
    assert released(push(guard, "c")) == "c"


def test_text_before_the_ban_in_the_same_hold_is_kept() -> None:
    guard = BannedStrings(["abc", "bd"])
    assert released(push(guard, "a")) == ""
    assert released(push(guard, "b")) == ""
    assert push(guard, "d") == 1  # "bd" began at the second held token: keep "a", still held
    assert guard.held_tokens == 1
    assert guard.flush().text == "a"


def test_matching_ignores_case() -> None:
    guard = BannedStrings(["Dragon"])
    assert released(push(guard, "DRA")) == ""
    assert push(guard, "GoN") == 0
    assert fold("ÄBC") == "äbc"
    assert len(fold("İx")) == 2  # (a letter whose lower case is longer is left as it is)


def test_a_partial_character_is_never_a_rewind_point() -> None:
    guard = BannedStrings(["é!"])
    assert released(push(guard, "x")) == "x"
    assert released(push(guard, "", whole=False)) == ""  # the first byte of "é"
    assert released(push(guard, "é")) == ""
    assert push(guard, "!") == 0  # back to the token with the first byte, not the one that completed "é"


def test_flush_releases_what_is_held() -> None:
    guard = BannedStrings(["dragon"])
    push(guard, "the dra")
    assert guard.flush().text == "the dra"


def test_the_earliest_of_several_bans_wins() -> None:
    guard = BannedStrings(["cd", "bcde"])
    assert released(push(guard, "a")) == "a"
    assert released(push(guard, "b")) == ""
    assert released(push(guard, "c")) == ""
    assert push(guard, "d") == 1  # "cd" completed first (it began at "c")


# -- the engine's own cuts ---------------------------------------------------------------------------------


def test_top_a_keeps_tokens_at_least_a_times_p_max_squared() -> None:
    probs = np.array([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = np.log(probs).astype(np.float32)
    ids = np.arange(5, dtype=np.int32)
    kept, _ = top_a(ids, logits, 0.4)  # threshold 0.4 * 0.25 = 0.1
    assert kept.tolist() == [0, 1, 2]
    kept, _ = top_a(ids, logits, 1.0)  # 0.25: only the first two... and the first always
    assert kept.tolist() == [0, 1]


def test_tail_free_cuts_where_the_curve_flattens() -> None:
    probs = np.array([0.4, 0.3, 0.2, 0.05, 0.03, 0.01, 0.005, 0.005])
    logits = np.log(probs).astype(np.float32)
    ids = np.arange(len(probs), dtype=np.int32)[::-1].copy()  # (ids are not positions)
    kept, values = tail_free(ids, logits[::-1].copy(), 0.5)
    second = np.abs(np.diff(probs, n=2))
    cut = int(np.flatnonzero(np.cumsum(second / second.sum()) > 0.5)[0])
    assert kept.tolist() == ids[::-1][: max(1, cut)].tolist()  # the most likely, in order
    assert values.tolist() == sorted(values.tolist(), reverse=True)
    kept_all, _ = tail_free(ids, logits[::-1].copy(), 0.9999)
    assert len(kept_all) >= len(kept)


@pytest.mark.parametrize("z", [0.1, 0.5, 0.95])
def test_tail_free_keeps_the_most_likely(z: float) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 5000).astype(np.float32)
    ids = np.arange(5000, dtype=np.int32)
    kept, values = tail_free(ids, logits, z)
    assert int(kept[0]) == int(np.argmax(logits))
    assert len(kept) <= 3000  # (only the most likely 3000 are looked at, as KoboldCpp does)
    assert float(values.min()) >= float(np.sort(logits)[::-1][len(kept) - 1]) - 1e-6
