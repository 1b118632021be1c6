"""MixMemo's storing policy: a mix whose store is small is stored at its first miss, a big one at its second
sighting. (What a hit returns is checked against full solves in test_sim_incremental_sharing.py, with every
store counted big as well.)"""
from __future__ import annotations

from rpsim.sim import mix_memo
from rpsim.sim.mix_memo import MixMemo

BIG = mix_memo.CHEAP_STORE


def _settle(memo: MixMemo[str], key: tuple, size: int) -> bool:
    """What IncrementalRates.settle does with the memo; whether it hit."""
    if memo.get(key) is not None:
        return True
    if memo.worth_storing(key, size):
        memo.put(key, f"rates of {key}")
    return False


def test_a_small_mix_is_stored_at_its_first_miss():
    memo: MixMemo[str] = MixMemo()
    assert not _settle(memo, ("small",), BIG - 1)
    assert len(memo) == 1 and _settle(memo, ("small",), BIG - 1)
    assert (memo.lookups, memo.hits) == (2, 1)


def test_a_big_mix_is_stored_at_its_second_sighting_and_hits_from_its_third():
    memo: MixMemo[str] = MixMemo()
    assert not _settle(memo, ("big", 1), BIG)  # remembered, not stored
    assert not _settle(memo, ("big", 2), BIG)
    assert len(memo) == 0
    assert not _settle(memo, ("big", 1), BIG)  # its second sighting: stored now
    assert len(memo) == 1 and memo.get(("big", 2)) is None
    assert _settle(memo, ("big", 1), BIG)
    assert not _settle(memo, ("big", 2), BIG) and _settle(memo, ("big", 2), BIG)
