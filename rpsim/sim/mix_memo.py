"""`MixMemo`: the whole-mix memo of `IncrementalRates`, storing a mix's solution only where it is likely
to be asked for again.

A settle looks up the sequence of every active flow's kind; a hit adopts the rates (and the loads they put
on the summed resources) that the same sequence got before, a miss solves the components and stores the
result. Storing costs a pass over the mix's flows and every summed resource it crosses: on 2-socket
servers nearly every mix recurs (94% hits on Llama-70B RoundPipe on 4090x8, 78% on the 235B plan), but on
many-socket servers most mixes are new (84% misses on Llama-70B RoundPipe on h100x64, where a copy
crosses ~300 summed resources), so most stores were never read, and ~100K of them held ~390 MB.

Policy: while at least half of the lookups hit (and during the first WARMUP_LOOKUPS), every miss is stored,
as before. Below that, a mix is stored at its second sighting: the first is remembered by its hash only
(a collision only stores a mix early). A mix that recurs k times then hits k - 2 times instead of k - 1.
What a hit returns is what the solve gave the same sequence, so the policy decides the cost only, never
a float (rpsim.sim.incremental_sharing).

Pure; must not import simpy.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from rpsim.sim.sharing import MEMO_ENTRIES

WARMUP_LOOKUPS = 1000  # every run's first mixes are new: judge the hit rate after these
E = TypeVar("E")


class MixMemo(Generic[E]):
    """Entries by mix key, stored at once while lookups mostly hit, else from a key's second sighting."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, E] = {}
        self._seen_once: set[int] = set()  # hashes of the mixes met once, not stored (low hit rate only)
        self.lookups = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> E | None:
        self.lookups += 1
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
        return entry

    def worth_storing(self, key: Hashable) -> bool:
        """After a miss of `key`: whether to store its solution (the caller then calls `put`)."""
        if 2 * self.hits >= self.lookups or self.lookups <= WARMUP_LOOKUPS:
            return True
        key_hash = hash(key)
        if key_hash in self._seen_once:
            return True
        if len(self._seen_once) >= MEMO_ENTRIES:
            self._seen_once.clear()
        self._seen_once.add(key_hash)
        return False

    def put(self, key: Hashable, entry: E) -> None:
        if len(self._entries) >= MEMO_ENTRIES:
            self._entries.clear()
        self._entries[key] = entry
