"""Instantaneous rates of concurrent flows on shared links: strict priority between classes, max-min fair
within a class, and a capacity slowdown while both directions of a duplex link are busy.

A pure function over plain lists and dicts (called on every flow event, so no numpy). Must not import
simpy or anything else from rpsim.sim.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from itertools import chain, repeat
from operator import sub
from typing import Protocol

from rpsim.errors import SpecError, choices_message

RatesMemo = dict[tuple, list[float]]
MEMO_ENTRIES = 100_000  # flow sequences a memo keeps (a 235B RoundPipe run meets ~9k); then it restarts
# A fill that has scanned SCAN_ROUNDS rounds and still has at least HEAP_FILL_RESOURCES resources left
# takes its next bottlenecks from a heap of fair shares (same picks, same floats: see _fill_class).
# Scanning is cheaper while rounds are few, which is what servers give: fills captured mid-run on
# RoundPipe Llama-70B on 32 and 64 H100s (~5 rounds, 43-54 resources on average) cost 17-20% fewer
# instructions scanned than with the heap from 24 resources on; the heap pays where nearly every round
# freezes a group of its own (5x fewer instructions at 256 resources and as many rounds).
# benchmarks/bench_fill.py; benchmarks/notes-sim.md, session 17.
HEAP_FILL_RESOURCES = 24
SCAN_ROUNDS = 8

# (a, b): the two directions of one link, slowed by the default duplex_factor while both carry a flow;
# (a, b, f): both slowed by f; (a, b, f_a, f_b): each direction by its own measured factor.
DuplexPair = tuple[str, str] | tuple[str, str, float] | tuple[str, str, float, float]


class FlowLike(Protocol):
    """Anything with these three attributes can be allocated a rate (e.g. FlowNetwork's live flows)."""

    @property
    def flow_id(self) -> Hashable: ...

    @property
    def path(self) -> tuple[str, ...]: ...

    @property
    def priority(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow: the resources it crosses (each at the flow's full rate) and its class, 0 = most urgent."""

    flow_id: Hashable
    path: tuple[str, ...]
    priority: int = 0

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        """As a bundle of one share (rpsim.sim.incremental_sharing)."""
        return (self.path,)


@dataclass(frozen=True)
class Links:
    """A capacity map with its duplex pairs indexed by resource, built once per network.

    `partners[r]` lists (other direction, factor on r) for every pair naming r, in the pairs' order, so
    the slowdown multiplies r's capacity in the same order (and to the same float) as a scan of the pairs.
    """

    capacity_bytes_per_s: Mapping[str, float]
    partners: Mapping[str, tuple[tuple[str, float], ...]]
    # _effective_capacities' memo: a set of resources -> their capacities after the duplex slowdown
    effective_capacities: dict[frozenset[str], dict[str, float]] = field(default_factory=dict, compare=False,
                                                                         repr=False)

    @classmethod
    def of(cls, capacity_bytes_per_s: Mapping[str, float], duplex_pairs: Iterable[DuplexPair] = (),
           duplex_factor: float = 1.0) -> Links:
        partners: dict[str, list[tuple[str, float]]] = {}
        for pair in duplex_pairs:
            a, b = pair[0], pair[1]
            factor_a, factor_b = _pair_factors(pair, duplex_factor)
            partners.setdefault(a, []).append((b, factor_a))
            partners.setdefault(b, []).append((a, factor_b))
        return cls(capacity_bytes_per_s, {r: tuple(p) for r, p in partners.items()})


def allocate_rates(
    flows: Sequence[FlowLike],
    capacity_bytes_per_s: Mapping[str, float],
    duplex_pairs: Iterable[DuplexPair] = (),
    duplex_factor: float = 1.0,
    memo: RatesMemo | None = None,
) -> dict[Hashable, float]:
    """Rate of every flow, bytes/s, keyed by flow_id.

    Classes are served in ascending priority; each gets a max-min fair share of what the classes before
    it left. A flow with an empty path crosses no resource, so nothing limits it: its rate is inf (the
    caller treats it as instantaneous). A resource named twice in one path carries the flow twice.

    `memo`, a dict the caller keeps for one capacity map and duplex setting, remembers the rates of each
    sequence of (path, priority): the result depends on nothing else, so a repeat gets the same floats.
    """
    return allocate_on(flows, Links.of(capacity_bytes_per_s, duplex_pairs, duplex_factor), memo)


def allocate_on(flows: Sequence[FlowLike], links: Links, memo: RatesMemo | None = None) -> dict[Hashable, float]:
    """`allocate_rates` over prepared `links` (see there)."""
    if memo is None:
        return _allocate(flows, links)
    key = tuple([(flow.path, flow.priority) for flow in flows])
    in_order = memo.get(key)
    if in_order is None:
        rates = _allocate(flows, links)
        if len(memo) >= MEMO_ENTRIES:
            memo.clear()
        memo[key] = [rates[flow.flow_id] for flow in flows]
        return rates
    rates = {flow.flow_id: rate for flow, rate in zip(flows, in_order)}
    if len(rates) != len(flows):
        raise ValueError(f"flow ids must be unique; {len(flows)} flows share {len(rates)} ids")
    return rates


def _allocate(flows: Sequence[FlowLike], links: Links) -> dict[Hashable, float]:
    # Flows with the same (path, priority) get the same rate (filling treats them alike): fill once per
    # such group, in the order the groups first occur (see allocate_groups).
    group_of: dict[tuple[tuple[str, ...], int], int] = {}
    member_groups = [group_of.setdefault((flow.path, flow.priority), len(group_of)) for flow in flows]
    counts = [0] * len(group_of)
    for group in member_groups:
        counts[group] += 1
    group_rates = allocate_groups([path for path, _ in group_of], [priority for _, priority in group_of], counts,
                                  links)
    rates = {flow.flow_id: group_rates[group] for flow, group in zip(flows, member_groups)}
    if len(rates) != len(flows):
        raise ValueError(f"flow ids must be unique; {len(flows)} flows share {len(rates)} ids")
    return rates


def allocate_groups(paths: Sequence[tuple[str, ...]], priorities: Sequence[int], counts: Sequence[int],
                    links: Links) -> list[float]:
    """The rate of each flow of group g, for `counts[g]` alike flows on `paths[g]` at `priorities[g]`
    (inf for an empty path): the same floats as `allocate_on` over the flows listed in any order in which each
    group's first flow comes in group order.

    Why grouping is exact: alike flows cross the same resources, so every round of filling freezes all of
    them or none, at one share, and spends that share along the path once per flow (repeated subtraction
    of one value, whose result does not depend on which flow subtracts first). The bottleneck tie-break
    ranks resources by first sight in the flow list; the first flow to cross a resource is its group's
    first flow, so ranking by first sight in the group list is the same order.
    """
    rates = [math.inf] * len(paths)  # what an empty path keeps
    classes: dict[int, list[int]] = {}
    for group, priority in enumerate(priorities):
        if paths[group]:
            classes.setdefault(priority, []).append(group)
    left_bytes_per_s = _effective_capacities(paths, links)
    for priority in sorted(classes):
        _fill_class(classes[priority], paths, counts, left_bytes_per_s, rates)
    return rates


def _effective_capacities(paths: Iterable[tuple[str, ...]], links: Links) -> dict[str, float]:
    """Capacity of every resource some flow crosses, after the duplex slowdown.

    A pair counts as duplex-busy when both directions carry a flow of any class, even a starved one:
    deciding it from the rates instead would make the capacities depend on the rates they produce.
    A resource in several busy pairs is slowed by the product of their factors.
    """
    # A fill's resources are a set that recurs (which GPU links are busy, the shared host ones) far more
    # often than its mix of flows: its capacities are remembered by that set, and copied, since the
    # filling spends them.
    key = frozenset(chain.from_iterable(paths))
    known = links.effective_capacities.get(key)
    if known is not None:
        return dict(known)
    capacities = _slowed_capacities(key, links)
    if len(links.effective_capacities) >= MEMO_ENTRIES:
        links.effective_capacities.clear()
    links.effective_capacities[key] = capacities
    return dict(capacities)


def _slowed_capacities(resources: Iterable[str], links: Links) -> dict[str, float]:
    capacity_bytes_per_s = links.capacity_bytes_per_s
    try:
        capacities = dict(zip(resources, map(capacity_bytes_per_s.__getitem__, resources)))
    except KeyError:
        unknown = next(r for r in resources if r not in capacity_bytes_per_s)
        raise SpecError(choices_message("resource", unknown, capacity_bytes_per_s)) from None
    partners = links.partners
    for resource in capacities:
        for other, factor in partners.get(resource, ()):
            if other in capacities:
                capacities[resource] *= factor
    return capacities


def _pair_factors(pair: DuplexPair, duplex_factor: float) -> tuple[float, float]:
    if len(pair) == 2:
        return duplex_factor, duplex_factor
    if len(pair) == 3:
        return pair[2], pair[2]
    return pair[2], pair[3]


def _fill_class(members: list[int], paths: Sequence[tuple[str, ...]], counts: Sequence[int],
                left_bytes_per_s: dict[str, float], rates: list[float]) -> None:
    """Progressive filling of one class (the groups `members`) over the capacity left; spends it.

    Max-min fairness (Bertsekas & Gallager, Data Networks, 2nd ed., Sec. 6.5.2): no flow's rate can grow
    without shrinking a flow whose rate is no larger. Water-filling reaches it: find the resource whose
    capacity left, split evenly over the unfrozen flows crossing it, is smallest (the bottleneck), freeze
    those flows at that share, subtract it along their paths, repeat. Each round freezes at least one group
    and scans the resources once: O(groups * resources).

    A fill of many rounds over many resources takes its later bottlenecks from a heap of (fair share,
    first-seen rank) instead (SCAN_ROUNDS): the scan picks the smallest share, ties to the resource seen
    first, which is the heap's order too (n_crossing keeps first-seen order). An entry is current while its
    share equals the resource's share now (recomputed the scan's way, so the same float); a round pushes
    the new share of every resource it touched: O(touches * log resources) for those rounds.
    """
    n_crossing: dict[str, int] = {}  # unfrozen flows on each resource; a resource leaves at zero
    crossers: dict[str, list[int]] = {}
    for group in members:
        count = counts[group]
        for resource in paths[group]:
            if resource in n_crossing:
                n_crossing[resource] += count
                crossers[resource].append(group)
            else:
                n_crossing[resource] = count
                crossers[resource] = [group]
    inf = math.inf
    rounds = 0
    heap: list[tuple[float, int, str]] | None = None
    touched: dict[str, None] | None = None  # the resources a heap round spends on
    while n_crossing:
        if heap is None and rounds >= SCAN_ROUNDS and len(n_crossing) >= HEAP_FILL_RESOURCES:
            heap, rank = _share_heap(n_crossing, left_bytes_per_s)
        if heap is None:
            rounds += 1
            # The bottleneck: the smallest fair share, ties to the resource seen first in the flow list
            # (inlined: this runs on every flow event). Capacity left can dip a few ulps below zero; it
            # counts as zero.
            bottleneck, share_bytes_per_s = None, inf
            for resource, n in n_crossing.items():
                left = left_bytes_per_s[resource]
                share = left / n if left > 0.0 else 0.0
                if share < share_bytes_per_s:
                    bottleneck, share_bytes_per_s = resource, share
            if bottleneck is None:  # only unlimited (inf) resources remain: their groups keep rate inf
                return
        else:
            while True:
                share_bytes_per_s, _rank, bottleneck = heapq.heappop(heap)
                unfrozen = n_crossing.get(bottleneck)
                if unfrozen is not None:
                    left = left_bytes_per_s[bottleneck]
                    if (left / unfrozen if left > 0.0 else 0.0) == share_bytes_per_s:
                        break
            if share_bytes_per_s == inf:
                return
            touched = {}
        # The round: the unfrozen groups crossing the bottleneck get its share, which each of their flows
        # spends along the path. A group is frozen once its rate is finite (every group starts at inf).
        for group in crossers[bottleneck]:
            if rates[group] != inf:
                continue  # frozen in an earlier round (or earlier in this one: a path crossing it twice)
            rates[group] = share_bytes_per_s
            count = counts[group]
            for resource in paths[group]:
                if count == 1:
                    left_bytes_per_s[resource] -= share_bytes_per_s
                else:  # once per flow, as the flows would (k * share rounds differently); the loop in C
                    left_bytes_per_s[resource] = reduce(sub, repeat(share_bytes_per_s, count),
                                                        left_bytes_per_s[resource])
                if touched is not None:
                    touched[resource] = None
                n = n_crossing[resource] - count
                if n:
                    n_crossing[resource] = n
                else:
                    del n_crossing[resource]
        if touched is not None and heap is not None:
            for resource in touched:
                unfrozen = n_crossing.get(resource)
                if unfrozen is not None:
                    left = left_bytes_per_s[resource]
                    heapq.heappush(heap, (left / unfrozen if left > 0.0 else 0.0, rank[resource], resource))


def _share_heap(n_crossing: dict[str, int], left_bytes_per_s: dict[str, float],
                ) -> tuple[list[tuple[float, int, str]], dict[str, int]]:
    """The heap of (fair share, first-seen rank, resource) of every resource left, and the ranks."""
    rank = {resource: k for k, resource in enumerate(n_crossing)}
    heap = []
    for resource, n in n_crossing.items():
        left = left_bytes_per_s[resource]
        heap.append((left / n if left > 0.0 else 0.0, rank[resource], resource))
    heapq.heapify(heap)
    return heap, rank
