"""Filling a component of bundles (flows of one share per path, rpsim.sim.incremental_sharing): the
kinds of bundle it holds, with how many of each, expanded into groups of alike shares for
sharing.allocate_groups.

Why it is exact: alike shares (the same path and priority, in different bundles of one kind or not)
are filled alike, so one group with their count gives the floats of filling them one by one; listing
the kinds in first-start order and each kind's shares in path order lists every group's first share in
the order a flow-by-flow list of the shares would.

Pure; must not import simpy.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rpsim.sim.sharing import Links, allocate_groups


@dataclass(frozen=True, slots=True)
class BundleKind:
    """What the tracker needs of one (paths, priority): per share, the tracked resources met (in path
    order, repeats kept) and the summed ones; and the tracked resources of all shares, once each."""

    paths: tuple[tuple[str, ...], ...]
    priority: int
    share_tracked: tuple[tuple[str, ...], ...]
    share_summed: tuple[tuple[str, ...], ...]
    tracked: tuple[str, ...]
    summed_pairs: tuple[tuple[str, int], ...]  # (summed resource, share) of every share, share by share

    @classmethod
    def of(cls, paths: tuple[tuple[str, ...], ...], priority: int, tracked: set[str], summed: set[str]) -> BundleKind:
        share_tracked = tuple(tuple(r for r in path if r in tracked) for path in paths)
        share_summed = tuple(tuple(r for r in path if r in summed) for path in paths)
        return cls(paths, priority, share_tracked, share_summed,
                   tuple(dict.fromkeys(r for path in share_tracked for r in path)),
                   tuple((r, i) for i, share in enumerate(share_summed) for r in share))


def fill_bundles(kinds: Sequence[BundleKind], counts: Sequence[int], links: Links) -> list[tuple[float, ...]]:
    """The share rates of each of `kinds` (in first-start order), `counts[i]` bundles of kind i."""
    group_of: dict[tuple[tuple[str, ...], int], int] = {}
    share_groups: list[list[int]] = []
    group_flows: list[int] = []
    for kind, n in zip(kinds, counts):
        groups = []
        for path in kind.paths:
            group = group_of.setdefault((path, kind.priority), len(group_of))
            if group == len(group_flows):
                group_flows.append(n)
            else:
                group_flows[group] += n
            groups.append(group)
        share_groups.append(groups)
    group_rate = allocate_groups([path for path, _ in group_of], [p for _, p in group_of], group_flows,
                                 links).__getitem__
    return [tuple(map(group_rate, groups)) for groups in share_groups]  # (each kind's lookups in C)
