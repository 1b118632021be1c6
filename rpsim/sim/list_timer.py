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


def list_schedule(plan: Plan, graph: nx.DiGraph, costs: CostContext, topology: Topology | None = None,
                  hop_s: float = 0.0) -> Trace:
    """Start and end of every action of `plan`; `graph` is rpsim.ir.deps.dependency_graph(plan)."""
    lane_of = {(gpu, a): lane for (gpu, lane), actions in plan.lanes.items() for a in actions}
    end_s: dict[tuple[int, Action], float] = {}
    events = []
    for node in nx.topological_sort(graph):
        start = 0.0
        for pred, edge in graph.pred[node].items():
            start = max(start, end_s[pred] + (hop_s if edge.get("hop") else 0.0))
        gpu, a = node
        n_bytes, busy_s = 0.0, 0.0
        if a.kind in TRANSFER_PRIORITY:
            if topology is not None:
                n_bytes = transfer_bytes(costs, a)
                busy_s = transfer_s(topology, gpu, a, n_bytes)
        else:
            busy_s = duration_s(costs, a)
            issue = action_issue_s(costs, a) if topology is not None else None
            if issue is not None:  # the host issuing alone on the interpreter (rpsim.sim.host_issue)
                busy_s = max(busy_s, sum(issue))
        end_s[node] = start + busy_s
        events.append(TraceEvent(gpu=gpu, lane=lane_of[node], action=str(a), kind=a.kind, stage=a.stage,
                                 mb=a.mb, it=a.it, start_s=start, end_s=end_s[node], bytes=n_bytes))
    events.sort(key=lambda e: (e.start_s, e.gpu, e.lane, e.action))  # the engine's order
    return Trace(tuple(events))


def list_timed(plan: Plan, sc: Scenario) -> Trace:
    """The list timer on the same inputs `simulate(plan, sc)` gives the engine."""
    topo = build_topology(sc.server, sc.profile) if plan.level == "pcie" else None
    hop_s = hop_delay(plan.level, sc).seconds
    return list_schedule(plan, dependency_graph(plan), cost_context(plan, sc), topo, hop_s)


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
