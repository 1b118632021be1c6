"""Instantaneous rates of concurrent flows on shared links: strict priority between classes, max-min fair
within a class, and a capacity slowdown while both directions of a duplex link are busy.

A pure function over plain lists and dicts (called on every flow event, so no numpy). Must not import
simpy or anything else from rpsim.sim.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rpsim.errors import SpecError, choices_message

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


def allocate_rates(
    flows: Sequence[FlowLike],
    capacity_bytes_per_s: Mapping[str, float],
    duplex_pairs: Iterable[DuplexPair] = (),
    duplex_factor: float = 1.0,
) -> dict[Hashable, float]:
    """Rate of every flow, bytes/s, keyed by flow_id.

    Classes are served in ascending priority; each gets a max-min fair share of what the classes before
    it left. A flow with an empty path crosses no resource, so nothing limits it: its rate is inf (the
    caller treats it as instantaneous). A resource named twice in one path carries the flow twice.
    """
    rates: dict[Hashable, float] = {}
    classes: dict[int, list[FlowLike]] = {}
    for flow in flows:
        if flow.path:
            classes.setdefault(flow.priority, []).append(flow)
        else:
            rates[flow.flow_id] = math.inf
    left_bytes_per_s = _effective_capacities(classes.values(), capacity_bytes_per_s, duplex_pairs,
                                             duplex_factor)
    for priority in sorted(classes):
        _fill_class(classes[priority], left_bytes_per_s, rates)
    if len(rates) != len(flows):
        raise ValueError(f"flow ids must be unique; {len(flows)} flows share {len(rates)} ids")
    return rates


def _effective_capacities(
    classes: Iterable[list[FlowLike]],
    capacity_bytes_per_s: Mapping[str, float],
    duplex_pairs: Iterable[DuplexPair],
    duplex_factor: float,
) -> dict[str, float]:
    """Capacity of every resource some flow crosses, after the duplex slowdown.

    A pair counts as duplex-busy when both directions carry a flow of any class, even a starved one:
    deciding it from the rates instead would make the capacities depend on the rates they produce.
    A resource in several busy pairs is slowed by the product of their factors.
    """
    capacities: dict[str, float] = {}
    for members in classes:
        for flow in members:
            for resource in flow.path:
                if resource not in capacities:
                    try:
                        capacities[resource] = capacity_bytes_per_s[resource]
                    except KeyError:
                        raise SpecError(choices_message("resource", resource, capacity_bytes_per_s)) from None
    for pair in duplex_pairs:
        a, b = pair[0], pair[1]
        if a in capacities and b in capacities:
            factor_a, factor_b = _pair_factors(pair, duplex_factor)
            capacities[a] *= factor_a
            capacities[b] *= factor_b
    return capacities


def _pair_factors(pair: DuplexPair, duplex_factor: float) -> tuple[float, float]:
    if len(pair) == 2:
        return duplex_factor, duplex_factor
    if len(pair) == 3:
        return pair[2], pair[2]
    return pair[2], pair[3]


def _fill_class(members: list[FlowLike], left_bytes_per_s: dict[str, float], rates: dict[Hashable, float]) -> None:
    """Progressive filling of one class over the capacity left; spends that capacity.

    Max-min fairness (Bertsekas & Gallager, Data Networks, 2nd ed., Sec. 6.5.2): no flow's rate can grow
    without shrinking a flow whose rate is no larger. Water-filling reaches it: find the resource whose
    capacity left, split evenly over the unfrozen flows crossing it, is smallest (the bottleneck), freeze
    those flows at that share, subtract it along their paths, repeat. Each round freezes at least one flow
    and scans the resources once: O(flows * resources).
    """
    n_crossing: dict[str, int] = {}  # unfrozen flows on each resource; a resource leaves at zero
    crossers: dict[str, list[int]] = {}
    for i, flow in enumerate(members):
        for resource in flow.path:
            n_crossing[resource] = n_crossing.get(resource, 0) + 1
            crossers.setdefault(resource, []).append(i)
    frozen = [False] * len(members)
    while n_crossing:
        bottleneck, share_bytes_per_s = _bottleneck(n_crossing, left_bytes_per_s)
        if bottleneck is None:  # only unlimited (inf) resources remain
            for i, flow in enumerate(members):
                if not frozen[i]:
                    rates[flow.flow_id] = math.inf
            return
        for i in crossers[bottleneck]:
            if frozen[i]:
                continue
            frozen[i] = True
            flow = members[i]
            rates[flow.flow_id] = share_bytes_per_s
            for resource in flow.path:
                left_bytes_per_s[resource] -= share_bytes_per_s
                n_crossing[resource] -= 1
                if not n_crossing[resource]:
                    del n_crossing[resource]


def _bottleneck(n_crossing: dict[str, int], left_bytes_per_s: dict[str, float]) -> tuple[str | None, float]:
    """The resource with the smallest fair share; ties go to the one seen first in the flow list.

    Capacity left can dip a few ulps below zero after subtractions; it counts as zero.
    """
    best, best_share = None, math.inf
    for resource, n in n_crossing.items():
        left = left_bytes_per_s[resource]
        share = left / n if left > 0.0 else 0.0
        if share < best_share:
            best, best_share = resource, share
    return best, best_share
