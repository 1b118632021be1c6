"""Filling a component of bundles (flows of one share per path, rpsim.sim.incremental_sharing): the
kinds of bundle it holds, with their counts, expanded into groups of alike shares for
sharing.allocate_groups.

Why it is exact: shares alike on the resources a fill keeps (a copy's per-socket shares, whose paths
differ only in loose DRAM and inter-socket links) are filled alike, so one group with their count gives
the floats of filling them one by one; listing the kinds in first-start order and each kind's shares in
path order lists every group's first share in the order a flow-by-flow list would. A loose resource is
left out of the paths: it is never a bottleneck, since the tracker verifies that it stays below the
margin and starts over with it tight when not. A fill's own load on each resource it left out is
returned so the caller can tell whether that held for this component alone (then the rates are the
component's full solve whatever the loose set is later).

Pure; must not import simpy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rpsim.sim.sharing import Links, allocate_groups

# Per share of a kind: the path a fill uses, and the resources it leaves out (repeats kept).
SharesToFill = tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class BundleKind:
    """What the tracker needs of one (paths, priority): per share, the tracked resources met (in path
    order, repeats kept) and the summed ones; and the tracked resources of all shares, once each."""

    paths: tuple[tuple[str, ...], ...]
    priority: int
    share_tracked: tuple[tuple[str, ...], ...]
    share_summed: tuple[tuple[str, ...], ...]
    tracked: tuple[str, ...]

    @classmethod
    def of(cls, paths: tuple[tuple[str, ...], ...], priority: int, tracked: set[str], summed: set[str]) -> BundleKind:
        share_tracked = tuple(tuple(r for r in path if r in tracked) for path in paths)
        return cls(paths, priority, share_tracked, tuple(tuple(r for r in path if r in summed) for path in paths),
                   tuple(dict.fromkeys(r for path in share_tracked for r in path)))


def fill_bundles(counts: Mapping[int, int], priorities: Sequence[int], shares: Sequence[SharesToFill],
                 links: Links) -> tuple[dict[int, tuple[float, ...]], dict[str, float]]:
    """The share rates of each kind `k` of `counts` (kind -> how many bundles, in first-start order), given
    its priority and its shares to fill (in the same order); and the load the fill puts on every
    resource it left out."""
    group_of: dict[tuple[tuple[str, ...], int], int] = {}
    share_groups: list[list[int]] = []
    group_flows: list[int] = []
    for n, priority, kind_shares in zip(counts.values(), priorities, shares):
        groups = []
        for path, _left_out in kind_shares:
            group = group_of.setdefault((path, priority), len(group_of))
            if group == len(group_flows):
                group_flows.append(n)
            else:
                group_flows[group] += n
            groups.append(group)
        share_groups.append(groups)
    group_rates = allocate_groups([path for path, _ in group_of], [p for _, p in group_of], group_flows, links)
    rate_of: dict[int, tuple[float, ...]] = {}
    own_load: dict[str, float] = {}
    for (k, n), groups, kind_shares in zip(counts.items(), share_groups, shares):
        rates = rate_of[k] = tuple([group_rates[g] for g in groups])
        for rate, (_path, left_out) in zip(rates, kind_shares):
            for resource in left_out:
                own_load[resource] = own_load.get(resource, 0.0) + n * rate
    return rate_of, own_load
