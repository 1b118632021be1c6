"""MixMemo's storing policy: every miss stored while lookups mostly hit, else from a mix's second sighting
(what a hit returns is checked against full solves in test_sim_incremental_sharing.py, in both modes)."""
from __future__ import annotations

from unittest.mock import patch

from rpsim.sim import mix_memo
from rpsim.sim.mix_memo import MixMemo


def _settle(memo: MixMemo[str], key: tuple) -> bool:
    """What IncrementalRates.settle does with the memo; whether it hit."""
    if memo.get(key) is not None:
        return True
    if memo.worth_storing(key):
        memo.put(key, f"rates of {key}")
    return False


def test_during_the_warmup_every_miss_is_stored():
    memo: MixMemo[str] = MixMemo()
    hits = [_settle(memo, (k,)) for k in range(mix_memo.WARMUP_LOOKUPS)]  # all new: 0% hits
    assert not any(hits) and len(memo) == mix_memo.WARMUP_LOOKUPS
    assert _settle(memo, (0,)) and memo.get((1,)) == "rates of (1,)"


def test_while_half_the_lookups_hit_a_mix_is_stored_at_its_first_sighting():
    with patch.object(mix_memo, "WARMUP_LOOKUPS", 0):
        memo: MixMemo[str] = MixMemo()
        memo.put(("a",), "rates")
        assert _settle(memo, ("a",))  # 1 hit of 1
        assert not _settle(memo, ("b",))  # a miss: 1 of 2 hit, so stored at once
        assert _settle(memo, ("b",))


def test_with_few_hits_a_mix_is_stored_at_its_second_sighting_and_hits_from_its_third():
    with patch.object(mix_memo, "WARMUP_LOOKUPS", 0):
        memo: MixMemo[str] = MixMemo()
        assert not _settle(memo, ("new", 1))  # 0 of 1 hit: remembered, not stored
        assert len(memo) == 0
        assert [_settle(memo, ("new", 2)), _settle(memo, ("new", 3))] == [False, False]
        assert not _settle(memo, ("new", 1))  # its second sighting: stored now
        assert len(memo) == 1
        assert _settle(memo, ("new", 1))  # and found from the third on


def test_the_hit_rate_decides_again_at_every_miss():
    # Few hits at first (second sightings), then mixes that recur: back to storing every miss at once.
    with patch.object(mix_memo, "WARMUP_LOOKUPS", 0):
        memo: MixMemo[str] = MixMemo()
        for _ in range(3):
            _settle(memo, ("x",))  # miss, miss (stored), hit: 1 of 3
        assert not memo.worth_storing(("y",))
        for _ in range(3):
            _settle(memo, ("x",))  # 4 of 6 hit
        assert memo.worth_storing(("z",))
