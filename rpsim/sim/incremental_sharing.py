"""`IncrementalRates`: the max-min rates of `sharing.allocate_on` kept up to date as flows start and end,
re-solving only the connected components of the flow-resource graph that a start or an end touched.

Why that is exact: progressive filling (sharing._fill_class) only ever subtracts a flow's share along
its own path and picks, each round, the smallest fair share (ties to the resource met first in start
order). Two sets of flows that share no resource never change each other's capacity left, so filling
them together picks, within each set, the same bottlenecks in the same order with the same floats as
filling each alone. What couples resources: a flow crossing both, the two directions of a duplex pair
(a direction's capacity depends on whether the other carries a flow), and a priority class (it fills
what the classes before it left on the same resources: the graph spans all classes). A component is
solved with its flows in start order, as a full solve sees them.

A resource that is never the bottleneck couples nothing either: filling never picks it, so removing it
changes no pick and no float. Shared host resources (DRAM, root complexes, switch uplinks) carry every
GPU's flows but are rarely saturated, so they start *loose*: components are found without them, and
after each solve every loose resource the solve touched is verified to carry at most (1 - 1e-9) of its
capacity. That margin is far above float rounding, so the full solve could not have picked it. A
resource that fails becomes *tight* and the settle starts over with it coupling; a tight resource
turns loose again once a solve leaves it below the margin. Infinite capacities are always loose;
duplex directions are always tight (their capacity depends on the other direction, not on a sum).

Must not import simpy (a pure bookkeeping class; FlowNetwork drives it).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable
from itertools import compress
from operator import ne

from rpsim.sim.sharing import MEMO_ENTRIES, FlowLike, Links, allocate_groups

# Loose resources must stay this far below capacity (relative): far above float rounding of a sum.
LOOSE_MARGIN = 1e-9
# A running load within this fraction of the margin is re-summed exactly: running sums drift by float
# rounding (~1e-16 per update, relative to the largest term), so far less than this over any run.
RESUM_BAND = 1e-6


class IncrementalRates:
    """Active flows, in start order, their rates, and the resources a start or an end made stale."""

    def __init__(self, links: Links) -> None:
        self.links = links
        capacity = links.capacity_bytes_per_s
        # Resources whose flows are tracked: finite ones (they may bind) and duplex directions.
        self._tracked = {r for r, cap in capacity.items() if cap < math.inf or r in links.partners}
        self._summed = {r for r in self._tracked if r not in links.partners}  # finite, no duplex partner
        self._loose = set(self._summed)  # all of them start loose
        self._load: dict[str, float] = dict.fromkeys(self._summed, 0.0)  # running sum of rates on each
        # Loads at or below these are below the margin by more than a running sum can drift.
        self._clear_limit = {r: capacity[r] * (1.0 - LOOSE_MARGIN) * (1.0 - RESUM_BAND) for r in self._summed}
        self._seq: dict[Hashable, int] = {}  # active flow -> its start number
        self._rate: dict[Hashable, float] = {}  # active flow -> its current rate, once settled
        self._next_seq = 0
        self._on: dict[str, dict[Hashable, FlowLike]] = {}  # tracked resource -> active flows crossing it
        self._stale: dict[str, None] = {}  # tracked resources a start or an end touched (ordered set)
        self._new: list[FlowLike] = []  # started since the last settle
        self._active: dict[Hashable, FlowLike] = {}  # in start order
        # Per component: its kinds in first-start order with their flow counts -> the rate of each kind.
        self._memo: dict[tuple[tuple[int, int], ...], dict[int, float]] = {}
        # Per sequence of all active flows: (rates in start order, loads on summed resources, near capacity)
        self._whole_memo: dict[tuple, tuple[list[float], dict[str, float], list[str]]] = {}
        # Memo keys are sequences of small ints, one per distinct (path, priority): cheap to hash.
        self._kind_of: dict[tuple[tuple[str, ...], int], int] = {}
        self._kind: dict[Hashable, int] = {}  # active flow -> its kind, in start order
        self._kind_path: list[tuple[str, ...]] = []  # kind -> its path
        self._kind_priority: list[int] = []
        # The tracked resources on each path met (in path order, repeats kept), and the summed ones.
        self._path_tracked: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._path_summed: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._seq)

    def start(self, flow: FlowLike) -> None:
        self.start_all((flow,))

    def end(self, flow: FlowLike) -> None:
        self.end_all((flow,))

    def start_all(self, flows: Iterable[FlowLike]) -> None:
        """`start` each flow in order (one call for a copy's per-socket shares)."""
        seq, active, kinds, kind_of, on, stale = self._seq, self._active, self._kind, self._kind_of, self._on, self._stale
        path_tracked = self._path_tracked
        next_seq = self._next_seq
        for flow in flows:
            flow_id = flow.flow_id
            if flow_id in seq:
                raise ValueError(f"flow id {flow_id!r} is already active")
            seq[flow_id] = next_seq
            next_seq += 1
            self._new.append(flow)
            active[flow_id] = flow
            path = flow.path
            kind = kind_of.get((path, flow.priority))
            if kind is None:
                kind = kind_of[(path, flow.priority)] = len(kind_of)
                self._kind_path.append(path)
                self._kind_priority.append(flow.priority)
                path_tracked[path] = tuple(r for r in path if r in self._tracked)
                self._path_summed[path] = tuple(r for r in path if r in self._summed)
            kinds[flow_id] = kind
            for resource in path_tracked[path]:
                crossing = on.get(resource)
                if crossing is None:
                    on[resource] = {flow_id: flow}
                else:
                    crossing[flow_id] = flow
                stale[resource] = None
        self._next_seq = next_seq

    def end_all(self, flows: Iterable[FlowLike]) -> None:
        """`end` each flow in order."""
        seq, active, kinds, rates = self._seq, self._active, self._kind, self._rate
        on, summed, load, stale, path_tracked = self._on, self._summed, self._load, self._stale, self._path_tracked
        for flow in flows:
            flow_id = flow.flow_id
            del seq[flow_id]
            del active[flow_id]
            del kinds[flow_id]
            rate = rates.pop(flow_id, 0.0)
            for resource in path_tracked[flow.path]:
                crossing = on.get(resource)
                if crossing is not None and crossing.pop(flow_id, None) is not None and not crossing:
                    del on[resource]
                    if resource in summed:
                        load[resource] = 0.0  # exact again: no drift survives an idle resource
                elif resource in summed and crossing:
                    load[resource] -= rate
                stale[resource] = None

    def settle(self) -> list[tuple[FlowLike, float]]:
        """(flow, rate) for every active flow whose rate changed since the last settle (new flows
        included); the rates of all other active flows are what the previous settles gave them."""
        # Schedules repeat whole mixes of flows round after round (70-95% of the settles of an 8-GPU
        # RoundPipe run): the rates a settle gave one sequence of (path, priority) answer its repeats.
        key = tuple(self._kind.values())
        known = self._whole_memo.get(key)
        if known is not None:
            return self._take(*known)
        roots = list(self._stale)
        solved: dict[Hashable, tuple[FlowLike, float]] = {}
        while True:
            # A failed attempt only adds tight resources, so the next one reaches every flow it solved.
            failed, relaxable = self._settle_from(roots, solved)
            if not failed:
                break
            self._loose.difference_update(failed)
            roots += failed  # start over: the failed resources now join their flows' components
        self._loose.update(relaxable)
        self._stale = {}
        self._new = []
        if len(self._whole_memo) >= MEMO_ENTRIES:
            self._whole_memo.clear()
        # The mix's rates, the loads they put on the summed resources, and those of them near capacity.
        load, clear_limit = self._load, self._clear_limit
        loads = {r: load[r] for r in self._on if r in clear_limit}
        near = [r for r, total in loads.items() if total > clear_limit[r]]
        self._whole_memo[key] = (list(map(self._rate.__getitem__, self._active)), loads, near)
        return list(solved.values())

    def _take(self, rates: list[float], loads: dict[str, float], near: list[str]) -> list[tuple[FlowLike, float]]:
        """Adopt the full solution `rates` of the active flows (in start order), with the loads it puts on
        the summed resources. A loose resource it brings near capacity turns tight (tight is always exact;
        no rate may stay bound by a loose resource, since settles do not re-solve through one)."""
        old_rates = self._rate
        differs = list(map(ne, map(old_rates.get, self._active), rates))  # in C: most rates repeat
        ids = list(compress(self._active, differs))
        if ids:
            new_rates = list(compress(rates, differs))
            old_rates.update(zip(ids, new_rates))
            updates = list(zip(map(self._active.__getitem__, ids), new_rates))
        else:
            updates = []
        self._load.update(loads)  # resources no active flow crosses were zeroed by their last end
        if near:
            self._loose.difference_update(near)
        self._stale = {}
        self._new = []
        return updates

    def _settle_from(self, roots: list[str], solved: dict[Hashable, tuple[FlowLike, float]],
                     ) -> tuple[list[str], list[str]]:
        """Solve the components reached from `roots` (and new flows alone) into `solved`; the loose
        resources they touched that are no longer below the margin, and the tight ones that are."""
        seen_flows: set[Hashable] = set()
        seen_resources: set[str] = set()
        touched_loose: dict[str, None] = {}
        touched_tight: dict[str, None] = {}
        for resource in roots:
            if resource in self._loose:
                touched_loose[resource] = None  # a start or end changed its sum
            elif resource not in seen_resources:
                component = self._component(resource, seen_resources, seen_flows, touched_loose, touched_tight)
                if component:
                    self._solve(component, solved)
        for flow in self._new:  # crossing no tight resource: alone in its component
            if flow.flow_id not in seen_flows and flow.flow_id in self._seq:
                seen_flows.add(flow.flow_id)
                for hop in flow.path:
                    if hop in self._loose:
                        touched_loose[hop] = None
                self._solve([flow.flow_id], solved, alone=True)
        load, clear_limit = self._load, self._clear_limit
        failed = [r for r in touched_loose if load[r] > clear_limit[r] and not self._below_margin(r)]
        # Staying tight is always exact, so relaxing needs only the running load (a tight resource sits at
        # capacity, where an exact re-sum would run on every settle).
        relaxable = [r for r in touched_tight if r in clear_limit and load[r] <= clear_limit[r]]
        return failed, relaxable

    def _component(self, root: str, seen_resources: set[str], seen_flows: set[Hashable],
                   touched_loose: dict[str, None], touched_tight: dict[str, None]) -> list[Hashable]:
        """Ids of the active flows connected to tight resource `root` through tight resources (marking
        what it visits and the loose and tight resources it meets), in start order."""
        found: list[Hashable] = []
        seen_resources.add(root)
        stack = [root]
        on, partners, loose, tracked = self._on, self.links.partners, self._loose, self._tracked
        while stack:
            resource = stack.pop()
            touched_tight[resource] = None
            for other, _factor in partners.get(resource, ()):
                if other not in seen_resources:
                    seen_resources.add(other)
                    stack.append(other)
            for flow_id, flow in on.get(resource, {}).items():
                if flow_id not in seen_flows:
                    seen_flows.add(flow_id)
                    found.append(flow_id)
                    for hop in flow.path:
                        if hop in loose:
                            touched_loose[hop] = None
                        elif hop not in seen_resources and hop in tracked:
                            seen_resources.add(hop)
                            stack.append(hop)
        if len(found) == len(self._active):  # every active flow (common on many-socket servers)
            return list(self._active)
        found.sort(key=self._seq.__getitem__)
        return found

    def _solve(self, ids: list[Hashable], solved: dict[Hashable, tuple[FlowLike, float]], alone: bool = False,
               ) -> None:
        """Rates of the component `ids` (in start order); those that changed go into `solved`.

        Flows of one kind (path, priority) always share a rate, so the component is filled once per kind
        (sharing.allocate_groups), over the tight resources of its path only: a loose resource is never a
        bottleneck (the settle verifies it afterwards and starts over when one is), so leaving it out
        changes no pick and no float. A flow `alone` (crossing no tight resource) keeps its whole path.
        """
        # Schedules repeat the same mixes of flows round after round and the capacities never change:
        # the memo, keyed by the component's kinds and counts, answers those repeats.
        kinds = list(map(self._kind.__getitem__, ids))
        counts = Counter(kinds)  # in first-start order
        key = tuple(counts.items())
        rate_of = self._memo.get(key)
        if rate_of is None:
            rate_of, exact = self._fill(counts, alone)
            if exact:  # (else a loose resource binds: the settle starts over with it tight)
                if len(self._memo) >= MEMO_ENTRIES:
                    self._memo.clear()
                self._memo[key] = rate_of
        in_order = list(map(rate_of.__getitem__, kinds))
        active, old_rates, path_summed, load = self._active, self._rate, self._path_summed, self._load
        olds = list(map(old_rates.get, ids))
        for i in compress(range(len(ids)), map(ne, olds, in_order)):  # in C: most rates repeat
            flow_id = ids[i]
            flow, rate = active[flow_id], in_order[i]
            change = rate - (olds[i] or 0.0)
            if change:
                for resource in path_summed[flow.path]:
                    load[resource] += change
            old_rates[flow_id] = rate
            solved[flow_id] = (flow, rate)

    def _fill(self, counts: Counter, alone: bool) -> tuple[dict[int, float], bool]:
        """Each kind's rate, filled over the tight resources of its path (all of it when `alone`), and
        whether that is the component's full solve whatever the loose set is later (safe to memoise): it
        is unless the rates load a loose resource past the margin, so that leaving it out may have
        changed them (the settle's check then fails on that resource too: other components only add
        load)."""
        kind_path, groups = self._kind_path, list(counts)
        priorities = [self._kind_priority[k] for k in groups]
        n_flows = list(counts.values())
        if alone:
            rates = allocate_groups([kind_path[k] for k in groups], priorities, n_flows, self.links)
            return dict(zip(groups, rates)), True
        # Kinds alike on their tight resources (a copy's per-socket shares, whose paths differ only in
        # loose DRAM and inter-socket links) are one group of the fill: alike flows get the same floats.
        loose, path_tracked = self._loose, self._path_tracked
        group_of: dict[tuple[tuple[str, ...], int], int] = {}
        kind_group = [group_of.setdefault((tuple([r for r in path_tracked[kind_path[k]] if r not in loose]), p),
                                          len(group_of)) for k, p in zip(groups, priorities)]
        group_flows = [0] * len(group_of)
        for group, n in zip(kind_group, n_flows):
            group_flows[group] += n
        group_rates = allocate_groups([path for path, _ in group_of], [p for _, p in group_of], group_flows,
                                      self.links)
        rates = [group_rates[group] for group in kind_group]
        rate_of = dict(zip(groups, rates))
        own_load: dict[str, float] = {}
        for k, n, rate in zip(groups, n_flows, rates):
            for resource in path_tracked[kind_path[k]]:
                if resource in loose:
                    own_load[resource] = own_load.get(resource, 0.0) + n * rate
        capacity = self.links.capacity_bytes_per_s
        return rate_of, all(load <= capacity[r] * (1.0 - LOOSE_MARGIN) for r, load in own_load.items())

    def _below_margin(self, resource: str) -> bool:
        """Whether the flows on a resource without a duplex partner leave it safely unsaturated."""
        if self._load[resource] <= self._clear_limit[resource]:  # below by more than a running sum drifts
            return True
        limit = self.links.capacity_bytes_per_s[resource] * (1.0 - LOOSE_MARGIN)
        rate = self._rate
        total = 0.0
        for flow_id, flow in self._on.get(resource, {}).items():
            total += rate.get(flow_id, 0.0) * flow.path.count(resource)
        self._load[resource] = total
        return total <= limit
