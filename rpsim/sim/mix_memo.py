"""`MixMemo`: the whole-mix memo of `IncrementalRates`, storing a big mix's solution only once the mix has
recurred.

A settle looks up the sequence of every active flow's kind; a hit adopts the rates (and the loads they put
on the summed resources) that the same sequence got before, a miss solves the components and stores the
result. A store holds the mix's flows and every summed resource they cross. On 2-8 socket servers that is
~15-50 entries, and a hit saves a max-min fill of up to ~30 groups (h100x8: ~100 us): every miss is stored,
as before. On 16 sockets (h100x64) a store is 83-154 entries (p10-p90), 84% of the mixes never recur, and
a miss's components are small and mostly answered by their own memo: a store of CHEAP_STORE entries or
more is made at the mix's second sighting (its first is remembered by hash only; a collision only stores
a mix early), so a mix that recurs k times hits k - 2 times instead of k - 1.

Measured (benchmarks/notes-sim.md, session 9): deciding by the window's share of recurring mixes as well
stored 3x as many mixes at h100x64 for a few more hits, and was slower there.
What a hit returns is what the solve gave the same sequence, so the policy decides the cost only, never
a float (rpsim.sim.incremental_sharing).

Pure; must not import simpy.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from rpsim.sim.sharing import MEMO_ENTRIES

CHEAP_STORE = 64  # entries (flows + summed resources crossed) below which a mix is stored at first sight
E = TypeVar("E")


class MixMemo(Generic[E]):
    """Entries by mix key: a small one stored at its first miss, a big one at its second."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, E] = {}
        self._seen_once: set[int] = set()  # hashes of the big mixes met once, not stored
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

    def worth_storing(self, key: Hashable, store_size: int) -> bool:
        """After a miss of `key`: whether to store its solution of `store_size` entries (the caller then
        calls `put`)."""
        if store_size < CHEAP_STORE:
            return True
        key_hash = hash(key)
        seen_once = self._seen_once
        if key_hash in seen_once:
            seen_once.discard(key_hash)
            return True
        if len(seen_once) >= MEMO_ENTRIES:
            seen_once.clear()
        seen_once.add(key_hash)
        return False

    def put(self, key: Hashable, entry: E) -> None:
        if len(self._entries) >= MEMO_ENTRIES:
            self._entries.clear()
        self._entries[key] = entry
