"""MixMemo's storing policy, per window of lookups: every miss stored while at least half of the lookups met a
mix seen before, else a mix stored at its second sighting. (What a hit returns is checked against full
solves in test_sim_incremental_sharing.py, with the policy flipping between settles.)"""
from __future__ import annotations

from unittest.mock import patch

from rpsim.sim import mix_memo
from rpsim.sim.mix_memo import MixMemo


def _settle(memo: MixMemo[str], key: tuple, size: int = mix_memo.CHEAP_STORE) -> bool:
    """What IncrementalRates.settle does with the memo; whether it hit."""
    if memo.get(key) is not None:
        return True
    if memo.worth_storing(key, size):
        memo.put(key, f"rates of {key}")
    return False


def test_the_first_window_stores_every_miss():
    memo: MixMemo[str] = MixMemo()
    hits = [_settle(memo, (k,)) for k in range(mix_memo.WINDOW_LOOKUPS)]  # all new: none recurs
    assert not any(hits) and len(memo) == mix_memo.WINDOW_LOOKUPS
    assert _settle(memo, (0,))


@patch.object(mix_memo, "WINDOW_LOOKUPS", 4)
def test_after_a_window_of_new_mixes_a_mix_is_stored_at_its_second_sighting_and_hits_from_its_third():
    memo: MixMemo[str] = MixMemo()
    for k in range(4):
        _settle(memo, ("first window", k))  # stored: the first window stores every miss
    assert len(memo) == 4 and memo.storing_all
    assert not _settle(memo, ("new", 1))  # the window had no recurring mix: remembered, not stored
    assert not memo.storing_all and len(memo) == 4
    assert not _settle(memo, ("new", 1))  # its second sighting: stored now
    assert len(memo) == 5
    assert _settle(memo, ("new", 1))  # found from the third on
    assert _settle(memo, ("first window", 0))  # what the first window stored stays


@patch.object(mix_memo, "WINDOW_LOOKUPS", 4)
def test_second_sightings_count_as_recurring_so_mixes_that_recur_bring_back_storing_every_miss():
    memo: MixMemo[str] = MixMemo()
    for k in range(4):
        _settle(memo, (k,))  # window 1: all new
    for key in [("a",), ("a",), ("b",), ("b",)]:
        _settle(memo, key)  # window 2: second sightings only (no hit), half the lookups recur
    assert not memo.storing_all and memo.hits == 0 and memo.recurring == 2
    assert not _settle(memo, ("c",))  # window 3 judges window 2 by its recurring mixes
    assert memo.storing_all and memo.get(("c",)) is not None  # stored at its first sighting


@patch.object(mix_memo, "WINDOW_LOOKUPS", 4)
def test_a_cheap_store_is_always_made():
    memo: MixMemo[str] = MixMemo()
    for k in range(5):
        _settle(memo, (k,))  # window 1: all new, so window 2 stores at second sightings
    assert not memo.storing_all and len(memo) == 4
    assert not _settle(memo, ("small",), size=mix_memo.CHEAP_STORE - 1)
    assert _settle(memo, ("small",))  # stored at its first sighting
