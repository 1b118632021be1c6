"""The SimPy engine: one process per lane runs its actions in order, each after its dependency events.

Compute, FREE and optimizer actions hold their lane for `duration_s`; transfers move their bytes over
the shared-link network (activations at priority 0 before parameters and gradients at 1, as RoundPipe's
transfer engine orders them). At the `hop` level a direct cross-GPU data edge costs a fixed delay.
One Environment per run, no globals; ties resolve in SimPy's event order, which is fixed by the lane
order (lanes sorted by (gpu, name)) and so deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import simpy

from rpsim.ir import Action, Plan
from rpsim.sim.action_costs import CostContext, duration_s, transfer_bytes
from rpsim.sim.network import FlowNetwork
from rpsim.sim.topology import Topology
from rpsim.sim.trace import Trace, TraceEvent

TRANSFER_KINDS = ("LOAD", "OFFLOAD", "ACT_OUT", "ACT_IN", "SEND")
PRIORITY = {"ACT_OUT": 0, "ACT_IN": 0, "SEND": 0, "LOAD": 1, "OFFLOAD": 1}


@dataclass(frozen=True)
class EngineInputs:
    plan: Plan
    graph: nx.DiGraph
    costs: CostContext
    topology: Topology | None  # None below the pcie level: no transfers exist
    hop_s: float = 0.0


def run_engine(inp: EngineInputs) -> tuple[Trace, FlowNetwork | None]:
    env = simpy.Environment()
    net = None
    if inp.topology is not None:
        t = inp.topology
        net = FlowNetwork(env, t.capacity_bytes_per_s, t.duplex_pairs, t.duplex_factor)
    done = {node: env.event() for node in inp.graph.nodes}
    end_s: dict[tuple[int, Action], float] = {}
    events: list[TraceEvent] = []
    for (gpu, lane), actions in sorted(inp.plan.lanes.items()):
        env.process(_lane(env, inp, net, gpu, lane, actions, done, end_s, events))
    env.run()
    unfinished = [n for n, ev in done.items() if not ev.triggered]
    if unfinished:
        gpu, a = unfinished[0]
        raise AssertionError(f"simulation stalled at gpu {gpu}: {a} (the plan checks should prevent this)")
    events.sort(key=lambda e: (e.start_s, e.gpu, e.lane, e.action))
    return Trace(tuple(events)), net


def _lane(env: simpy.Environment, inp: EngineInputs, net: FlowNetwork | None, gpu: int, lane: str,
          actions: tuple[Action, ...], done: dict, end_s: dict, events: list[TraceEvent]):
    graph = inp.graph
    for a in actions:
        node = (gpu, a)
        preds = [p for p in graph.predecessors(node) if graph.edges[p, node].get("why") != "lane"]
        waits = [done[p] for p in preds if not done[p].triggered]
        if waits:
            yield env.all_of(waits)
        if inp.hop_s:
            ready = max((end_s[p] + inp.hop_s for p in preds if graph.edges[p, node].get("hop")), default=env.now)
            if ready > env.now:
                yield env.timeout(ready - env.now)
        start = env.now
        n_bytes = 0.0
        if a.kind in TRANSFER_KINDS and net is not None:
            n_bytes = transfer_bytes(inp.costs, a)
            yield from _transfer(env, inp.topology, net, gpu, a, n_bytes)  # type: ignore[arg-type]
        elif a.kind not in TRANSFER_KINDS:
            d = duration_s(inp.costs, a)
            if d > 0:
                yield env.timeout(d)
        end_s[node] = env.now
        done[node].succeed()
        events.append(TraceEvent(gpu=gpu, lane=lane, action=str(a), kind=a.kind, stage=a.stage, mb=a.mb, it=a.it,
                                 start_s=start, end_s=env.now, bytes=n_bytes))


def _transfer(env: simpy.Environment, topo: Topology, net: FlowNetwork, gpu: int, a: Action, n_bytes: float):
    priority = PRIORITY[a.kind]
    if a.kind == "SEND":
        yield net.transfer(topo.p2p_path(gpu, a.peer), n_bytes, priority, topo.latency_s)  # type: ignore[arg-type]
        return
    paths = topo.h2d_paths[gpu] if a.kind in ("LOAD", "ACT_IN") else topo.d2h_paths[gpu]
    share = n_bytes / len(paths)  # host buffers interleaved over sockets: one flow per socket
    yield env.all_of([net.transfer(p, share, priority, topo.latency_s) for p in paths])
