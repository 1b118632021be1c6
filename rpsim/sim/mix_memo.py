"""`MixMemo`: the whole-mix memo of `IncrementalRates`, storing a mix's solution only where it is likely
to be asked for again.

A settle looks up the sequence of every active flow's kind; a hit adopts the rates (and the loads they put
on the summed resources) that the same sequence got before, a miss solves the components and stores the
result. Storing costs a pass over the mix's flows and every summed resource it crosses: on 2-socket
servers nearly every mix recurs (94% hits on Llama-70B RoundPipe on 4090x8, 78% on the 235B plan), but on
many-socket servers most mixes are new (84% misses on Llama-70B RoundPipe on h100x64, where a copy
crosses ~300 summed resources), so most stores were never read, and ~100K of them held ~390 MB.

Policy (for mixes whose store would hold CHEAP_STORE entries or more; smaller ones are always stored),
decided anew every WINDOW_LOOKUPS lookups from the last window's: while at least half of the
lookups met a mix seen before, every miss is stored, as before (and in the first window). Below that, a
mix is stored at its second sighting: the first is remembered by its hash only (a collision only stores a
mix early). A mix that recurs k times then hits k - 2 times instead of k - 1. The rate that decides counts
those second sightings as recurring, so it is the hit rate storing every miss would give, whichever way
mixes are being stored; and it is per window, since a run's first iteration (all new mixes) says little
about its later ones. (A first version used the run's hit rate so far: the second-sighting mode lowered
the rate that kept it on, and on h100x8 it cut hits from 67% to 49%.)
What a hit returns is what the solve gave the same sequence, so the policy decides the cost only, never
a float (rpsim.sim.incremental_sharing).

Pure; must not import simpy.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from rpsim.sim.sharing import MEMO_ENTRIES

WINDOW_LOOKUPS = 2000  # the policy is decided anew after each window of this many lookups
# A store of fewer entries (the mix's flows and the summed resources they cross) is always made: on 2-8
# socket servers a store is ~15-50 entries and a hit saves a max-min fill of ~30 groups (h100x8: ~100 us);
# at h100x64 a miss would store 83-154 (p10-p90) for a component solve that its own memo mostly answers.
CHEAP_STORE = 64
E = TypeVar("E")


class MixMemo(Generic[E]):
    """Entries by mix key, stored at once while most lookups meet a mix seen before, else from a mix's second
    sighting."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, E] = {}
        self._seen_once: set[int] = set()  # hashes of the mixes met once, not stored (low hit rate only)
        self.lookups = 0
        self.hits = 0
        self.recurring = 0  # lookups of a mix seen before: hits, and misses at a second sighting
        self.storing_all = True  # the policy of this window
        self._window_end = WINDOW_LOOKUPS  # lookups at the end of this window
        self._window_recurring = 0  # self.recurring at its start

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> E | None:
        self.lookups += 1
        if self.lookups > self._window_end:
            recurring = self.recurring - self._window_recurring
            self.storing_all = 2 * recurring >= WINDOW_LOOKUPS
            self._window_end += WINDOW_LOOKUPS
            self._window_recurring = self.recurring
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self.recurring += 1
        return entry

    def worth_storing(self, key: Hashable, store_size: int) -> bool:
        """After a miss of `key`: whether to store its solution of `store_size` entries (the caller then
        calls `put`)."""
        seen_once = self._seen_once
        key_hash = hash(key) if seen_once or not self.storing_all else 0
        if seen_once and key_hash in seen_once:  # its second sighting (first met in a window of few hits)
            seen_once.discard(key_hash)
            self.recurring += 1
            return True
        if self.storing_all or store_size < CHEAP_STORE:
            return True
        if len(seen_once) >= MEMO_ENTRIES:
            seen_once.clear()
        seen_once.add(key_hash)
        return False

    def put(self, key: Hashable, entry: E) -> None:
        if len(self._entries) >= MEMO_ENTRIES:
            self._entries.clear()
        self._entries[key] = entry
