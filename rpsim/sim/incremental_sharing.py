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

A tracked flow may be a bundle of shares (`paths`, one share per path, each a flow of max-min sharing):
a host copy interleaved over sockets is one bundle of its per-socket shares, so the bookkeeping is per
copy while the rates are per share, the same floats as with one flow per share listed in bundle order.
A bundle in a component brings all its shares into it (solving components together is exact, above).
When some shares of a bundle finish first, `drop_shares` keeps the bundle's place in start order.

Must not import simpy (a pure bookkeeping class; FlowNetwork drives it).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from itertools import compress, filterfalse
from operator import gt, ne, sub
from typing import Protocol

from rpsim.sim.bundle_fill import BundleKind, fill_bundles
from rpsim.sim.mix_memo import MixMemo
from rpsim.sim.sharing import MEMO_ENTRIES, Links

# Loose resources must stay this far below capacity (relative): far above float rounding of a sum.
LOOSE_MARGIN = 1e-9
# A running load within this fraction of the margin is re-summed exactly: running sums drift by float
# rounding (~1e-16 per update, relative to the largest term), so far less than this over any run.
RESUM_BAND = 1e-6
# Below this many active flows a Python loop beats map/compress scans (measured: 0.8 vs 3.5 us at 2 flows).
SMALL_MIX = 24


class Bundle(Protocol):
    """A tracked flow: one share of max-min sharing per path (e.g. FlowNetwork's live flows)."""

    @property
    def flow_id(self) -> Hashable: ...

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]: ...

    @property
    def priority(self) -> int: ...


class IncrementalRates:
    """Active flows (bundles of shares), in start order, their share rates, and the resources a start or
    an end made stale."""

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
        self._rate: dict[Hashable, tuple[float, ...]] = {}  # active flow -> its share rates, once settled
        self._next_seq = 0
        self._on: dict[str, dict[Hashable, Bundle]] = {}  # tracked resource -> active flows crossing it
        self._on_summed: dict[str, None] = {}  # the summed resources in _on, in the same order
        self._stale: dict[str, None] = {}  # tracked resources a start or an end touched (ordered set)
        self._new: list[Bundle] = []  # started since the last settle
        self._active: dict[Hashable, Bundle] = {}  # in start order
        # Per component: its kinds in first-start order with their flow counts -> the share rates of each.
        self._memo: dict[tuple[tuple[int, int], ...], dict[int, tuple[float, ...]]] = {}
        # Per sequence of all active flows' kinds: (share rates in start order, loads on summed resources,
        # those near capacity); stored where mixes recur (rpsim.sim.mix_memo)
        self._whole_memo: MixMemo[tuple[list[tuple[float, ...]], dict[str, float], list[str]]] = MixMemo()
        # Memo keys are sequences of small ints, one per distinct (paths, priority): cheap to hash.
        self._kind_of: dict[tuple[tuple[tuple[str, ...], ...], int], int] = {}
        self._kind: dict[Hashable, int] = {}  # active flow -> its kind, in start order
        self._kinds: list[BundleKind] = []
        self._stale_keys: list[dict[str, None]] = []  # per kind: its tracked resources, for one dict.update

    def __len__(self) -> int:
        return len(self._seq)

    def start(self, flow: Bundle) -> None:
        self.start_all((flow,))

    def end(self, flow: Bundle) -> None:
        self.end_all((flow,))

    def _kind_for(self, paths: tuple[tuple[str, ...], ...], priority: int) -> int:
        kind = self._kind_of.get((paths, priority))
        if kind is None:
            kind = self._kind_of[(paths, priority)] = len(self._kinds)
            self._kinds.append(BundleKind.of(paths, priority, self._tracked, self._summed))
            self._stale_keys.append(dict.fromkeys(self._kinds[-1].tracked))
        return kind

    def start_all(self, flows: Iterable[Bundle]) -> None:
        """`start` each flow in order."""
        seq, active, kinds, on, stale = self._seq, self._active, self._kind, self._on, self._stale
        summed, on_summed, kind_of = self._summed, self._on_summed, self._kind_of
        next_seq = self._next_seq
        for flow in flows:
            flow_id = flow.flow_id
            if flow_id in seq:
                raise ValueError(f"flow id {flow_id!r} is already active")
            seq[flow_id] = next_seq
            next_seq += 1
            self._new.append(flow)
            active[flow_id] = flow
            kind = kind_of.get((flow.paths, flow.priority))  # (_kind_for's lookup, inline: once per start)
            if kind is None:
                kind = self._kind_for(flow.paths, flow.priority)
            kinds[flow_id] = kind
            for resource in self._kinds[kind].tracked:
                crossing = on.get(resource)
                if crossing is None:
                    on[resource] = {flow_id: flow}
                    if resource in summed:
                        on_summed[resource] = None
                else:
                    crossing[flow_id] = flow
            stale.update(self._stale_keys[kind])  # (in C: the same keys in the same order as one by one)
        self._next_seq = next_seq

    def end_all(self, flows: Iterable[Bundle]) -> None:
        """`end` each flow in order."""
        seq, active, kinds, rates, load, stale = self._seq, self._active, self._kind, self._rate, self._load, self._stale
        for flow in flows:
            flow_id = flow.flow_id
            del seq[flow_id]
            del active[flow_id]
            k = kinds.pop(flow_id)
            kind = self._kinds[k]
            # _unload of every share, flattened: the same subtractions in the same order
            share_rates = rates.pop(flow_id, None)
            if share_rates is not None:
                for resource, share in kind.summed_pairs:
                    load[resource] -= share_rates[share]
            self._leave(flow_id, kind.tracked)
            stale.update(self._stale_keys[k])

    def drop_shares(self, flow: Bundle, keep: list[int]) -> None:
        """Flow `flow` goes on with only its shares `keep` (indices, ascending, not all): the others
        finished. It keeps its place in start order."""
        flow_id = flow.flow_id
        old = self._kinds[self._kind[flow_id]]
        kind = self._kind[flow_id] = self._kind_for(tuple(old.paths[i] for i in keep), old.priority)
        rates = self._rate.get(flow_id)
        if rates is not None:
            self._rate[flow_id] = tuple(rates[i] for i in keep)
        kept = set(keep)
        left = set(self._kinds[kind].tracked)
        self._unload(flow_id, old, [i for i in range(len(old.paths)) if i not in kept], rates,
                     [r for r in old.tracked if r not in left])
        for i in range(len(old.paths)):
            if i not in kept:
                self._stale.update(dict.fromkeys(old.share_tracked[i]))

    def _unload(self, flow_id: Hashable, kind: BundleKind, shares: Iterable[int], rates: tuple[float, ...] | None,
                leaving: Sequence[str]) -> None:
        """Take shares `shares` of a flow off the running loads, and the flow off the resources `leaving`."""
        load = self._load
        if rates is not None:
            for i in shares:
                rate = rates[i]
                for resource in kind.share_summed[i]:
                    load[resource] -= rate
        self._leave(flow_id, leaving)
        self._stale.update(dict.fromkeys(leaving))

    def _leave(self, flow_id: Hashable, leaving: Iterable[str]) -> None:
        """The flow off the crossing lists of `leaving`; a summed resource left idle restarts at load 0."""
        load, on, summed, on_summed = self._load, self._on, self._summed, self._on_summed
        for resource in leaving:
            crossing = on[resource]
            del crossing[flow_id]
            if not crossing:
                del on[resource]
                if resource in summed:
                    load[resource] = 0.0  # exact again: no drift survives an idle resource
                    del on_summed[resource]

    def settle(self) -> list[tuple[Bundle, tuple[float, ...]]]:
        """(flow, share rates) for every active flow whose rates changed since the last settle (new flows
        included); the rates of all other active flows are what the previous settles gave them."""
        # Schedules repeat whole mixes of flows round after round (70-95% of the settles of an 8-GPU
        # RoundPipe run): the rates a settle gave one sequence of kinds answer its repeats.
        key = tuple(self._kind.values())
        known = self._whole_memo.get(key)
        if known is not None:
            return self._take(*known)
        return self._solve_stale(key)

    def settle_covering(self) -> Iterable[tuple[Bundle, tuple[float, ...]]]:
        """`settle` for a caller that keeps every flow's last share rates itself (FlowNetwork's clocks) and
        compares them anyway: (flow, share rates) pairs covering at least every flow whose rates changed.
        On a whole-mix hit they are every active flow in start order, adopted in C without a comparison
        per flow (the common case: 2-8 socket servers hit on 70-95% of their settles)."""
        key = tuple(self._kind.values())
        known = self._whole_memo.get(key)
        if known is None:
            return self._solve_stale(key)
        rates, loads, near = known
        active = self._active
        self._rate.update(zip(active, rates))  # the unchanged ones get an equal tuple: nothing moves
        self._adopt_loads(loads, near)
        return zip(active.values(), rates)

    def _solve_stale(self, key: tuple[int, ...]) -> list[tuple[Bundle, tuple[float, ...]]]:
        """A whole-mix miss: solve the components the stale resources reach, store the mix where worth it,
        and return the flows whose rates changed."""
        # Only tight resources root components. A loose one a start or an end made stale needs no check of
        # its own: an end only lowered its sum, and a start's flow is solved in some component, which
        # marks every loose resource it crosses (so the roots are filtered in C, not walked).
        roots = list(filterfalse(self._loose.__contains__, self._stale))
        solved: dict[Hashable, tuple[Bundle, tuple[float, ...]]] = {}
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
        if not self._whole_memo.worth_storing(key, len(self._on_summed) + len(self._active)):
            return list(solved.values())
        # The mix's rates, the loads they put on the summed resources, and those of them near capacity.
        # (scans in C: on many-socket servers a mix crosses ~10^2 resources and a miss stores each)
        crossed = list(self._on_summed)
        values = list(map(self._load.__getitem__, crossed))
        loads = dict(zip(crossed, values))
        near = list(compress(crossed, map(gt, values, map(self._clear_limit.__getitem__, crossed))))
        self._whole_memo.put(key, (list(map(self._rate.__getitem__, self._active)), loads, near))
        return list(solved.values())

    def _take(self, rates: list[tuple[float, ...]], loads: dict[str, float], near: list[str],
              ) -> list[tuple[Bundle, tuple[float, ...]]]:
        """Adopt the full solution `rates` of the active flows (in start order), with the loads it puts on
        the summed resources. A loose resource it brings near capacity turns tight (tight is always exact;
        no rate may stay bound by a loose resource, since settles do not re-solve through one)."""
        old_rates, active = self._rate, self._active
        if len(active) < SMALL_MIX:  # a plain loop: the C idiom below costs ~3 us to set up
            updates = []
            for (flow_id, flow), new in zip(active.items(), rates):
                if old_rates.get(flow_id) != new:
                    old_rates[flow_id] = new
                    updates.append((flow, new))
        else:
            differs = list(map(ne, map(old_rates.get, active), rates))  # in C: most rates repeat
            ids = list(compress(active, differs))
            if ids:
                new_rates = list(compress(rates, differs))
                old_rates.update(zip(ids, new_rates))
                updates = list(zip(map(active.__getitem__, ids), new_rates))
            else:
                updates = []
        self._adopt_loads(loads, near)
        return updates

    def _adopt_loads(self, loads: dict[str, float], near: list[str]) -> None:
        """The rest of adopting a stored solution: its loads, its near-capacity resources turned tight, and
        nothing stale or new left."""
        self._load.update(loads)  # resources no active flow crosses were zeroed by their last end
        if near:
            self._loose.difference_update(near)
        self._stale = {}
        self._new = []

    def _settle_from(self, roots: list[str], solved: dict[Hashable, tuple[Bundle, tuple[float, ...]]],
                     ) -> tuple[list[str], list[str]]:
        """Solve the components reached from `roots` (and new flows alone) into `solved`; the loose
        resources they touched that are no longer below the margin, and the tight ones that are."""
        seen_flows: set[Hashable] = set()
        seen_resources: set[str] = set()
        touched_loose: dict[str, None] = {}
        touched_tight: dict[str, None] = {}
        for resource in roots:  # (tight: see settle)
            if resource not in seen_resources:
                component = self._component(resource, seen_resources, seen_flows, touched_loose, touched_tight)
                if component:
                    self._solve(component, solved)
        for flow in self._new:  # crossing no tight resource: alone in its component
            if flow.flow_id not in seen_flows and flow.flow_id in self._seq:
                seen_flows.add(flow.flow_id)
                for hop in self._kinds[self._kind[flow.flow_id]].tracked:
                    if hop in self._loose:
                        touched_loose[hop] = None
                self._solve([flow.flow_id], solved)
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
        on, partners, loose, kind, kinds = self._on, self.links.partners, self._loose, self._kind, self._kinds
        while stack:
            resource = stack.pop()
            touched_tight[resource] = None
            for other, _factor in partners.get(resource, ()):
                if other not in seen_resources:
                    seen_resources.add(other)
                    stack.append(other)
            for flow_id in on.get(resource, ()):
                if flow_id not in seen_flows:
                    seen_flows.add(flow_id)
                    found.append(flow_id)
                    for hop in kinds[kind[flow_id]].tracked:
                        if hop in loose:
                            touched_loose[hop] = None
                        elif hop not in seen_resources:
                            seen_resources.add(hop)
                            stack.append(hop)
        if len(found) == len(self._active):  # every active flow (common on many-socket servers)
            return list(self._active)
        found.sort(key=self._seq.__getitem__)
        return found

    def _solve(self, ids: list[Hashable], solved: dict[Hashable, tuple[Bundle, tuple[float, ...]]]) -> None:
        """Share rates of the component `ids` (in start order); those that changed go into `solved`."""
        # Schedules repeat the same mixes of flows round after round and the capacities never change:
        # the memo, keyed by the component's kinds and counts, answers those repeats.
        kinds = list(map(self._kind.__getitem__, ids))
        counts = dict.fromkeys(kinds, 1)  # in first-start order; usually every kind once
        if len(counts) < len(kinds):
            counts = Counter(kinds)
        key = tuple(counts.items())
        rate_of = self._memo.get(key)
        if rate_of is None:
            kinds_in = [self._kinds[k] for k in counts]
            rate_of = dict(zip(counts, fill_bundles(kinds_in, list(counts.values()), self.links)))
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = rate_of
        in_order = list(map(rate_of.__getitem__, kinds))
        active, old_rates, load, all_kinds = self._active, self._rate, self._load, self._kinds
        olds = list(map(old_rates.get, ids))
        for i in compress(range(len(ids)), map(ne, olds, in_order)):  # in C: most rates repeat
            flow_id, rates, old = ids[i], in_order[i], olds[i]
            changes = rates if old is None else list(map(sub, rates, old))  # per share: rate - old rate
            for resource, share in all_kinds[kinds[i]].summed_pairs:  # share by share, as the path goes
                change = changes[share]
                if change:
                    load[resource] += change
            old_rates[flow_id] = rates
            solved[flow_id] = (active[flow_id], rates)

    def _below_margin(self, resource: str) -> bool:
        """Whether the flows on a resource without a duplex partner leave it safely unsaturated."""
        if self._load[resource] <= self._clear_limit[resource]:  # below by more than a running sum drifts
            return True
        limit = self.links.capacity_bytes_per_s[resource] * (1.0 - LOOSE_MARGIN)
        rate, kind, kinds = self._rate, self._kind, self._kinds
        total = 0.0
        for flow_id in self._on.get(resource, ()):
            rates = rate.get(flow_id)
            if rates is not None:
                for share_rate, path in zip(rates, kinds[kind[flow_id]].paths):
                    total += share_rate * path.count(resource)
        self._load[resource] = total
        return total <= limit
