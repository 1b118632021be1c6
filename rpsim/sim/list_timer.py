"""A pure list-scheduling timer: the second, independent simulator the SimPy engine is tested against
(style.md; zero-bubble PP's `passes.py::add_time` does the same for its schedules).

Each action starts when every predecessor in the dependency graph has ended (its lane predecessor among
them), plus the `hop` delay on a direct cross-GPU data edge; actions are timed in topological order.
Compute, optimizer and FREE actions take `duration_s`. Transfers are timed as if no other action's
flows existed: latency + bytes / the smallest capacity on the path. A host copy's per-socket shares run
in parallel, as the engine issues them, sharing the links they have in common max-min fairly (the
rule of rpsim.sim.sharing). Where no two transfers of different actions overlap on a shared resource,
the engine's makespan must equal this one. It shares the engine's inputs (graph, CostContext, topology)
and none of its timing: no SimPy, no FlowNetwork, nothing from rpsim.sim.engine.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import networkx as nx

from rpsim.ir import Action, Plan
from rpsim.ir.deps import dependency_graph
from rpsim.scenario import Scenario
from rpsim.sim.action_costs import CostContext, action_issue_s, duration_s, transfer_bytes
from rpsim.sim.hop import hop_delay
from rpsim.sim.sharing import Flow, allocate_rates
from rpsim.sim.simulate import cost_context
from rpsim.sim.topology import TRANSFER_PRIORITY, Path, Topology, build_topology
from rpsim.sim.trace import Trace, TraceEvent

Times = dict[tuple[int, Action], tuple[float, float]]  # (gpu, action) -> (start, end): rpsim.sim.memory.Timed


class TransferTimes:
    """`transfer_s` memoised: a pure function of (gpu, kind, peer, bytes) on one topology, and a plan has
    thousands of transfers of a few dozen shapes, so plans on the same server (the search's candidates,
    which differ in partition, microbatching or schedule) share one table. Each entry is computed by
    `transfer_s` itself on first use: the memo returns the very float it would."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._seconds: dict[tuple[int, str, int | None, float], float] = {}

    def seconds(self, gpu: int, a: Action, n_bytes: float) -> float:
        key = (gpu, a.kind, a.peer, n_bytes)
        s = self._seconds.get(key)
        if s is None:
            s = self._seconds[key] = transfer_s(self.topology, gpu, a, n_bytes)
        return s


def list_schedule(plan: Plan, graph: nx.DiGraph, costs: CostContext, topology: Topology | None = None,
                  hop_s: float = 0.0, transfers: TransferTimes | None = None) -> Trace:
    """Start and end of every action of `plan`; `graph` is rpsim.ir.deps.dependency_graph(plan).
    `transfers`, when given, must be built on `topology` (it carries its memo across plans)."""
    return list_schedule_times(plan, graph, costs, topology, hop_s, transfers)[0]


def list_schedule_times(plan: Plan, graph: nx.DiGraph, costs: CostContext, topology: Topology | None = None,
                        hop_s: float = 0.0, transfers: TransferTimes | None = None) -> tuple[Trace, Times]:
    """list_schedule's trace, and the same times by (gpu, action), in the trace's order: what
    rpsim.sim.memory.timed_actions would parse back from the trace's text."""
    if topology is not None and transfers is None:
        transfers = TransferTimes(topology)
    nodes, start, end, moved = _times(graph, costs, transfers, hop_s)
    lanes = _lanes_of(plan, nodes)
    # The engine's order: (start, gpu, lane, action text) is a total order (an action's text names it,
    # and no lane lists an action twice), so the node number after them never decides.
    rows = sorted((start[i], node[0], lanes[i], str(node[1]), i) for i, node in enumerate(nodes))
    events = []
    times: Times = {}
    for start_s, gpu, lane, text, i in rows:
        node = nodes[i]
        a = node[1]
        events.append(TraceEvent(gpu=gpu, lane=lane, action=text, kind=a.kind, stage=a.stage, mb=a.mb, it=a.it,
                                 start_s=start_s, end_s=end[i], bytes=moved[i]))
        times[node] = (start_s, end[i])
    return Trace(tuple(events)), times


def _lanes_of(plan: Plan, nodes: list[tuple[int, Action]]) -> list[str]:
    """Each node's lane: {(gpu, a): lane over the plan's lanes}[node]. Looked up by the identity of the
    plan's Action objects, which rpsim.ir.deps makes the graph's nodes, when that finds every node and
    no other entry (so no lane entry is an equal copy of another's action); by equality otherwise."""
    by_id = {(gpu, id(a)): lane for (gpu, lane), actions in plan.lanes.items() for a in actions}
    if len(by_id) == len(nodes):
        found = [by_id.get((gpu, id(a))) for gpu, a in nodes]
        if None not in found:
            return found  # type: ignore[return-value]
    lane_of = {(gpu, a): lane for (gpu, lane), actions in plan.lanes.items() for a in actions}
    return [lane_of[node] for node in nodes]


def _times(graph: nx.DiGraph, costs: CostContext, transfers: TransferTimes | None, hop_s: float
           ) -> tuple[list[tuple[int, Action]], list[float], list[float], list[float]]:
    """The graph's nodes, and the start, end and bytes moved of each, timed in a topological order
    (Kahn's algorithm): each start is the max over the node's predecessors, which no valid topological
    order changes. The nodes are numbered once and found by identity (rpsim.ir.deps keys the
    predecessor dicts with the node objects themselves): a (gpu, Action) node hashes through Python
    (Action.__hash__), and finding predecessors by equality hashed several nodes per edge. Reads
    networkx's predecessor dicts directly, as rpsim.ir.deps writes them: its views build a wrapper
    object per access."""
    pred = graph._pred
    nodes = list(pred)
    n = len(nodes)
    by_id = {id(node): i for i, node in enumerate(nodes)}
    by_value: dict[tuple[int, Action], int] | None = None  # only for a graph keyed by equal copies
    plain: list[list[int]] = [[] for _ in range(n)]  # predecessors, without and with a hop delay
    hopped: list[list[int]] = [[] for _ in range(n)]
    succ: list[list[int]] = [[] for _ in range(n)]
    for i, preds in enumerate(pred.values()):
        for p, edge in preds.items():
            j = by_id.get(id(p))  # alive objects have distinct ids: a hit is the very node
            if j is None:
                by_value = by_value or {node: k for k, node in enumerate(nodes)}
                j = by_value[p]
            (hopped if edge.get("hop") else plain)[i].append(j)
            succ[j].append(i)
    waiting = [len(plain[i]) + len(hopped[i]) for i in range(n)]
    ready = [i for i in range(n) if not waiting[i]]
    start = [0.0] * n
    end = [0.0] * n
    moved = [0.0] * n
    cost: dict[tuple, tuple[float, float]] = {}
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        t0 = 0.0
        for j in plain[i]:
            t0 = max(t0, end[j])
        for j in hopped[i]:
            t0 = max(t0, end[j] + hop_s)
        gpu, a = nodes[i]
        # What an action costs depends on its fields but its microbatch (rpsim.sim.action_costs reads
        # none of them for it), and a plan repeats each shape over every microbatch: priced once per plan.
        shape = (gpu, a.kind, a.stage, a.it, a.phase, a.chunk, a.peer)
        priced = cost.get(shape)
        if priced is None:
            priced = cost[shape] = _price(gpu, a, costs, transfers)
        busy_s, moved[i] = priced
        start[i], end[i] = t0, t0 + busy_s
        for k in succ[i]:
            waiting[k] -= 1
            if not waiting[k]:
                ready.append(k)
    assert done == n, "the dependency graph has a cycle"  # check_plan refuses those
    return nodes, start, end, moved


def _price(gpu: int, a: Action, costs: CostContext, transfers: TransferTimes | None) -> tuple[float, float]:
    """(seconds `a` keeps its lane busy, bytes it moves): transfers alone on the network, compute and
    optimizer actions for their duration, or the host's issuing alone on the interpreter if longer."""
    if a.kind in TRANSFER_PRIORITY:
        if transfers is None:
            return 0.0, 0.0
        n_bytes = transfer_bytes(costs, a)
        return transfers.seconds(gpu, a, n_bytes), n_bytes
    busy_s = duration_s(costs, a)
    issue = action_issue_s(costs, a) if transfers is not None else None
    if issue is not None:  # rpsim.sim.host_issue
        busy_s = max(busy_s, sum(issue))
    return busy_s, 0.0


def list_timed(plan: Plan, sc: Scenario, transfers: TransferTimes | None = None) -> Trace:
    """The list timer on the same inputs `simulate(plan, sc)` gives the engine."""
    return list_timed_times(plan, sc, cost_context(plan, sc), transfers)[0]


def list_timed_times(plan: Plan, sc: Scenario, costs: CostContext, transfers: TransferTimes | None = None
                     ) -> tuple[Trace, Times]:
    """list_timed's trace and its times by action; `costs` is cost_context(plan, sc), `transfers` one
    built on build_topology(sc.server, sc.profile) (None: a fresh one)."""
    topo = None
    if plan.level == "pcie":
        topo = transfers.topology if transfers is not None else build_topology(sc.server, sc.profile)
    hop_s = hop_delay(plan.level, sc).seconds
    return list_schedule_times(plan, dependency_graph(plan), costs, topo, hop_s,
                               transfers if plan.level == "pcie" else None)


def transfer_s(topo: Topology, gpu: int, a: Action, n_bytes: float) -> float:
    """Seconds a transfer takes with the network to itself (the engine's paths, shares and latency)."""
    paths = topo.paths_of(gpu, a.kind, a.peer)
    if n_bytes == 0:
        return topo.latency_s
    share = n_bytes / len(paths)  # host buffers interleaved over sockets: one flow per socket
    return topo.latency_s + drain_s([share] * len(paths), paths, topo, TRANSFER_PRIORITY[a.kind])


def drain_s(n_bytes: list[float], paths: Sequence[Path], topo: Topology, priority: int) -> float:
    """Time until flows that start together on `paths` have all moved their bytes (fluid, max-min fair);
    one flow alone moves at the smallest capacity on its path."""
    left = dict(enumerate(n_bytes))
    elapsed = 0.0
    while left:
        flows = [Flow(i, tuple(paths[i]), priority) for i in left]
        rates = allocate_rates(flows, topo.capacity_bytes_per_s, topo.duplex_pairs, topo.duplex_factor)
        step = min(left[i] / rates[i] if rates[i] > 0 else math.inf for i in left)
        assert step < math.inf, "every flow starved: capacities must be positive"
        elapsed += step
        for i in list(left):
            left[i] = 0.0 if rates[i] == math.inf else left[i] - rates[i] * step
            if left[i] <= 1e-9 * n_bytes[i]:  # the flow that set the step, and any tied with it
                del left[i]
    return elapsed
