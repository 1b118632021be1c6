"""The SimPy engine: one process per lane runs its actions in order, each after its dependency events.

Compute, FREE and optimizer actions hold their lane for `duration_s`; transfers move their bytes over
the shared-link network (activations at priority 0 before parameters and gradients at 1, as RoundPipe's
transfer engine orders them). At the `hop` level a direct cross-GPU data edge costs a fixed delay.
One Environment per run, no globals; ties resolve in SimPy's event order, which is fixed by the lane
order (lanes sorted by (gpu, name)) and so deterministic.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

from rpsim.ir import Action, LaneId, Plan
from rpsim.ir.action import MOVING_KINDS
from rpsim.ir.deps import DependencyFacts
from rpsim.sim.action_costs import CostContext, action_issue_s, duration_s, host_step_bytes, transfer_bytes
from rpsim.sim.host_issue import INTERPRETER
from rpsim.sim.network import FlowNetwork
from rpsim.sim.steady import SteadyWatch
from rpsim.sim.timer import run_events, timer
from rpsim.sim.topology import TRANSFER_PRIORITY, Topology
from rpsim.sim.trace import Trace, TraceEvent

if TYPE_CHECKING:
    import networkx as nx

Node = tuple[int, Action]
# The memory controller serves the CPU's loads and the DMA engines' requests without RoundPipe's
# stream priorities: the optimizer's DRAM traffic shares a class with parameter traffic.
OPTIMIZER_PRIORITY = 1
ISSUE_PRIORITY = 0  # alone on its resource: the class only keeps the rates rule of rpsim.sim.sharing


@dataclass(frozen=True)
class EngineInputs:
    plan: Plan
    graph: DependencyFacts | nx.DiGraph  # rpsim.ir.deps.dependency_facts(plan), or dependency_graph(plan)
    costs: CostContext
    topology: Topology | None  # None below the pcie level: no transfers exist
    hop_s: float = 0.0
    stop_at_steady: bool = False  # async plans: stop once the iteration time converged (rpsim.sim.steady)


@dataclass(frozen=True)
class EngineRun:
    trace: Trace
    network: FlowNetwork | None
    timed: dict[Node, tuple[float, float]]  # (start_s, end_s) of every action, keyed like the graph
    simulated_iters: int  # the plan's n_iters, or fewer when the run stopped at steady state
    # Per lane, the latest iteration of its actions finished when the run stopped (-1: none): how far
    # the run got into iterations it did not keep (rpsim.steady_run: would a longer plan run the same).
    lane_progress: dict[LaneId, int] = field(default_factory=dict)


def run_engine(inp: EngineInputs) -> EngineRun:
    env = simpy.Environment()
    net = None
    if inp.topology is not None:
        t = inp.topology
        net = FlowNetwork(env, t.capacity_bytes_per_s, t.duplex_pairs, t.duplex_factor)
    ids = _wait_lists(inp.graph)
    # Completion events exist only for actions another lane waits on (created by the first waiter);
    # an action's own lane needs none. Unwatched events had no effect but cost a queue step each.
    watched: dict[int, simpy.Event] = {}
    times: list[tuple[float, float] | None] = [None] * len(ids.nodes)  # (start_s, end_s) by node id
    finished: list[int] = []  # node ids in the order they finished
    events: list[TraceEvent] = []
    cost: dict[tuple, tuple] = {}  # how each (kind, stage, phase, chunk) runs: seconds or bytes
    steady = SteadyWatch(env, inp.plan) if inp.stop_at_steady and inp.plan.optimizer == "async" else None
    run = _Run(env, inp, net, ids, watched, times, finished, events, cost, steady)
    for ((gpu, lane), actions), lane_ids in zip(sorted(inp.plan.lanes.items()), ids.lanes):
        env.process(_lane(run, gpu, lane, actions, lane_ids))
    run_events(env, steady.event if steady else None)  # env.run(until=...) without a call per event
    progress = lane_progress(inp.plan, ids, times)
    nodes = ids.nodes
    timed = {nodes[i]: times[i] for i in finished}  # type: ignore[misc]
    if steady is not None and steady.simulated_iters < inp.plan.n_iters:
        n = steady.simulated_iters  # later iterations' actions that ran meanwhile are dropped
        events = [e for e in events if e.it < n]
        timed = {node: times for node, times in timed.items() if node[1].it < n}
        return EngineRun(Trace(tuple(sorted(events, key=_event_order))), net, timed, n, progress)
    if len(timed) < len(nodes):
        gpu, a = next(node for i, node in enumerate(nodes) if times[i] is None)
        raise AssertionError(f"simulation stalled at gpu {gpu}: {a} (the plan checks should prevent this)")
    events.sort(key=_event_order)
    return EngineRun(Trace(tuple(events)), net, timed, inp.plan.n_iters, progress)


def lane_progress(plan: Plan, ids: DependencyFacts, times: list[tuple[float, float] | None]) -> dict[LaneId, int]:
    """EngineRun.lane_progress. A lane runs its actions one at a time, so the finished ones are a prefix."""
    out = {}
    for (lane, actions), lane_ids in zip(sorted(plan.lanes.items()), ids.lanes):
        n_done = bisect_left(lane_ids, True, key=lambda i: times[i] is None)
        out[lane] = max((a.it for a in actions[:n_done]), default=-1)
    return out


@dataclass(frozen=True)
class _Run:
    """What every lane process of one run shares."""

    env: simpy.Environment
    inp: EngineInputs
    net: FlowNetwork | None
    ids: DependencyFacts
    watched: dict[int, simpy.Event]  # node id -> its completion event, for the actions waited on
    times: list[tuple[float, float] | None]  # node id -> (start_s, end_s) once finished
    finished: list[int]
    events: list[TraceEvent]
    cost: dict[tuple, tuple]
    steady: SteadyWatch | None


def _wait_lists(graph: DependencyFacts | nx.DiGraph) -> DependencyFacts:
    """The graph by node id: rpsim.ir.deps records it while building, and its networkx graphs carry it."""
    if isinstance(graph, DependencyFacts):
        return graph
    facts = graph.graph.get("facts")
    if facts is None:
        raise TypeError("EngineInputs.graph must be rpsim.ir.deps.dependency_facts(plan) or a graph made by "
                        "rpsim.ir.deps (it carries them)")
    return facts  # type: ignore[no-any-return]


def _event_order(e: TraceEvent) -> tuple:
    return (e.start_s, e.gpu, e.lane, e.action)


def _lane(run: _Run, gpu: int, lane: str, actions: tuple[Action, ...], lane_ids: list[int]):
    env, inp, net, watched, times, cost, steady = run.env, run.inp, run.net, run.watched, run.times, run.cost, run.steady
    all_waits, all_hops = run.ids.waits, run.ids.hops
    finished, events = run.finished, run.events
    hop_s = inp.hop_s
    routes: dict[tuple[str, int | None], tuple] = {}  # this lane's transfers by (kind, peer)
    for i, a in zip(lane_ids, actions):
        deps = all_waits[i]
        if deps:
            waits = []
            for p in deps:
                if times[p] is None:
                    ev = watched.get(p)
                    if ev is None:
                        ev = watched[p] = env.event()
                    waits.append(ev)
            if waits:
                yield waits[0] if len(waits) == 1 else _all_of(env, waits)
            if hop_s:
                hops = all_hops[i]
                if hops:
                    ready = max(times[p][1] + hop_s for p in hops)  # type: ignore[index]
                    if ready > env.now:
                        yield env.timeout(ready - env.now)
        start = env._now  # noqa: SLF001 (env.now is a property: a Python call per read)
        # Durations, bytes and host issue times depend on these fields only; microbatches and iterations
        # repeat them.
        shape = (a.kind, a.stage, a.phase, a.chunk)
        how = cost.get(shape)
        if how is None:
            how = cost[shape] = _cost_of(inp, net, a)
        n_bytes = 0.0
        if how[0] == "move":
            n_bytes = how[1]
            route = routes.get((a.kind, a.peer))
            if route is None:
                route = routes[(a.kind, a.peer)] = _route(inp.topology, gpu, a)  # type: ignore[arg-type]
            paths, n_paths, priority, latency_s = route
            done = env.event()
            net.start_flows(paths, n_bytes / n_paths, priority, latency_s, done.succeed)  # type: ignore[union-attr]
            yield done
        elif how[0] == "host_step":
            # The host optimizer: its phases stream the layer's state through DRAM beside the DMA copies.
            for share, paths in how[1]:
                done = env.event()
                net.start_flows(paths, share, OPTIMIZER_PRIORITY, 0.0, done.succeed)  # type: ignore[union-attr]
                yield done
        else:
            _, d, issue = how
            if issue is not None:  # done when both the device and the host issuing its kernels are
                yield _issued(env, net, d, *issue)  # type: ignore[arg-type]
            elif d > 0:
                yield timer(env, d)
        end = env._now  # noqa: SLF001
        times[i] = (start, end)
        finished.append(i)
        ev = watched.pop(i, None)
        if ev is not None:
            ev.succeed()
        events.append(TraceEvent(gpu, lane, str(a), a.kind, a.stage, a.mb, a.it, start, end, n_bytes))
        if steady is not None:
            steady.finished(a, lane, end)


def _cost_of(inp: EngineInputs, net: FlowNetwork | None, a: Action) -> tuple:
    """("move", bytes) for a transfer, ("host_step", ((share bytes, paths), ...)) for a host optimizer
    step at the pcie level, ("hold", seconds, host issue or None) for the rest; transfers below the pcie
    level hold nothing."""
    if a.kind in MOVING_KINDS:
        return ("move", transfer_bytes(inp.costs, a)) if net is not None else ("hold", 0.0, None)
    if net is not None and a.kind == "STEP" and a.chunk is not None:
        phases = [(phase_bytes / len(paths), paths) for phase_bytes, paths in
                  zip(host_step_bytes(inp.costs, a), inp.topology.optimizer_paths)]  # type: ignore[union-attr]
        # the middle phases (widening, cache-resident) are no event where the layer has none: the first
        # and last run as they always did, bytes or not
        return ("host_step", (phases[0], *(p for p in phases[1:-1] if p[0] > 0), phases[-1]))
    return ("hold", duration_s(inp.costs, a), action_issue_s(inp.costs, a) if net is not None else None)


def _issued(env: simpy.Environment, net: FlowNetwork, device_s: float, interpreter_s: float,
            engine_s: float) -> simpy.Event:
    """The event of a compute action that ends when both its device time and its host side are over: the
    host side is its Python part on the shared interpreter, then the rest (rpsim.sim.host_issue)."""
    joined = env.event()
    left = [2]

    def arrive(_event: simpy.Event | None = None) -> None:
        left[0] -= 1
        if not left[0]:
            joined.succeed()

    def engine_part() -> None:
        if engine_s > 0:
            timer(env, engine_s, arrive)
        else:
            arrive()

    timer(env, device_s, arrive)  # (durations are >= 0)
    if interpreter_s > 0:
        net.start_flows(((INTERPRETER,),), interpreter_s, ISSUE_PRIORITY, 0.0, engine_part)
    else:
        engine_part()
    return joined


def _all_of(env: simpy.Environment, events: list[simpy.Event]) -> simpy.Event:
    """env.all_of(events) without the ConditionValue it builds: an event that succeeds while the last of
    `events` is processed, so it is scheduled at the very point of the queue all_of's would be (and
    same-instant ties resolve as before)."""
    joined = env.event()
    left = [len(events)]

    def arrive(_event: simpy.Event) -> None:
        left[0] -= 1
        if not left[0]:
            joined.succeed()

    for e in events:
        e.callbacks.append(arrive)  # type: ignore[union-attr]
    return joined


def _route(topo: Topology, gpu: int, a: Action) -> tuple[tuple[tuple[str, ...], ...], int, int, float]:
    """(paths, how many shares the bytes split into, priority, latency) of transfer `a` on `gpu`: a SEND
    takes its one P2P path; host buffers are interleaved over sockets, one flow per socket."""
    paths = topo.paths_of(gpu, a.kind, a.peer)
    if a.kind == "SEND":
        paths = paths[:1]
    return paths, len(paths), TRANSFER_PRIORITY[a.kind], topo.latency_s
