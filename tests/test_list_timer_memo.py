"""The list timer's memo and index (rpsim.sim.list_timer) change no figure: its traces equal, event for
event and bit for bit, those of the plain formulation (networkx's topological order, every transfer
timed afresh, lanes by equality) kept here as the reference; the transfer-time memo shared across plans
of one server returns what `transfer_s` computes; the times it hands the memory pass are the trace's."""
from __future__ import annotations

from functools import cache

import networkx as nx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rpsim.errors import SpecError
from rpsim.ir import Action, Plan
from rpsim.ir.deps import dependency_graph
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import Scenario, make_scenario
from rpsim.schedules import SCHEDULES, traits_of
from rpsim.sim.action_costs import CostContext, action_issue_s, duration_s, transfer_bytes
from rpsim.sim.hop import hop_delay
from rpsim.sim.list_timer import TransferTimes, list_schedule, list_timed, list_timed_times, transfer_s
from rpsim.sim.memory import memory_timeline, timed_actions
from rpsim.sim.simulate import cost_context
from rpsim.sim.topology import TRANSFER_PRIORITY, Topology, build_topology
from rpsim.sim.trace import Trace, TraceEvent
from rpsim.specs import ModelSpec, TrainingSpec

# 4090x4: two sockets, interleaved host memory (two flows per copy), no P2P; a800x8-nvlink: switches and
# NVLink SENDs; h200x2: the host's issue cost on the interpreter (action_issue_s).
SERVERS = ("4090x4", "a800x8-nvlink", "h200x2")
DEFERRABLE = tuple(n for n in SCHEDULES if traits_of(n).deferrable_w)


@cache
def scenario(gpus: str, mb_size: int, recompute: str) -> Scenario:
    model = ModelSpec(name="tiny", n_layers=12, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                      mlp_width=512, vocab=1024)
    return make_scenario(model, gpus, TrainingSpec(seq_len=128, global_batch=16, mb_size=mb_size,
                                                   recompute=recompute))


@cache
def shared_memo(gpus: str) -> TransferTimes:
    """One memo per server for every example of a test run, as a search worker keeps one."""
    sc = scenario(gpus, 1, "stage")
    return TransferTimes(build_topology(sc.server, sc.profile))


def reference_schedule(plan: Plan, graph: nx.DiGraph, costs: CostContext, topology: Topology | None,
                       hop_s: float) -> Trace:
    """The list timer as first written: networkx's topological sort, each transfer timed by transfer_s."""
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
            if issue is not None:
                busy_s = max(busy_s, sum(issue))
        end_s[node] = start + busy_s
        events.append(TraceEvent(gpu=gpu, lane=lane_of[node], action=str(a), kind=a.kind, stage=a.stage,
                                 mb=a.mb, it=a.it, start_s=start, end_s=end_s[node], bytes=n_bytes))
    events.sort(key=lambda e: (e.start_s, e.gpu, e.lane, e.action))
    return Trace(tuple(events))


def reference_timed(plan: Plan, sc: Scenario) -> Trace:
    topo = build_topology(sc.server, sc.profile) if plan.level == "pcie" else None
    return reference_schedule(plan, dependency_graph(plan), cost_context(plan, sc), topo,
                              hop_delay(plan.level, sc).seconds)


def build(sc: Scenario, req: PlanRequest) -> Plan:
    try:
        return make_plan(sc, req)
    except SpecError as e:  # a schedule refusing this shape (too few microbatches or layers)
        assume(False)
        raise AssertionError from e


@settings(max_examples=60, deadline=None)
@given(gpus=st.sampled_from(SERVERS), schedule=st.sampled_from(tuple(SCHEDULES)), mb_size=st.sampled_from([1, 2, 4]),
       recompute=st.sampled_from(["none", "stage", "layer"]), fidelity=st.sampled_from(["ideal", "hop", "pcie"]),
       defer_w=st.booleans())
def test_list_timer_equals_the_plain_formulation(gpus, schedule, mb_size, recompute, fidelity, defer_w):
    assume(not defer_w or schedule in DEFERRABLE)
    sc = scenario(gpus, mb_size, recompute)
    plan = build(sc, PlanRequest(schedule, fidelity=fidelity, defer_w=defer_w))
    want = reference_timed(plan, sc)
    assert list_timed(plan, sc) == want  # a fresh memo
    memo = shared_memo(gpus) if fidelity == "pcie" else None
    trace, times = list_timed_times(plan, sc, cost_context(plan, sc), memo)  # a memo other plans filled
    assert trace == want
    assert list(times.items()) == list(timed_actions(plan, trace).items())


@pytest.mark.parametrize("gpus", SERVERS)
def test_hop_plans_time_their_hop_edges(gpus):
    """Keeps the hop branch of the property above from passing vacuously: a hop-fidelity plan whose
    cross-GPU edges carry a positive delay, timed as the plain formulation times it."""
    sc = scenario(gpus, 2, "stage")
    plan = make_plan(sc, PlanRequest("1f1b", fidelity="hop"))
    assert dependency_graph(plan).graph["hop_edges"] and hop_delay("hop", sc).seconds > 0
    assert list_timed(plan, sc) == reference_timed(plan, sc)


def test_memoised_transfers_are_transfer_s():
    sc = scenario("a800x8-nvlink", 1, "stage")
    topo = build_topology(sc.server, sc.profile)
    memo = TransferTimes(topo)
    for n_bytes in (0.0, 1.0, 3e6, 2.5e8, 3e6):
        for gpu in range(sc.server.n_gpus):
            for a in (Action("LOAD", chunk=0), Action("OFFLOAD", chunk=1), Action("ACT_IN", 0, 0),
                      Action("ACT_OUT", 1, 0), Action("SEND", 0, 0, peer=(gpu + 1) % sc.server.n_gpus)):
                assert memo.seconds(gpu, a, n_bytes) == transfer_s(topo, gpu, a, n_bytes)
    assert memo.seconds(0, Action("LOAD", chunk=0), 3e6) != memo.seconds(0, Action("LOAD", chunk=0), 6e6)


def test_memory_from_the_handed_times_equals_memory_from_the_trace():
    sc = scenario("4090x4", 2, "stage")
    plan = make_plan(sc, PlanRequest("roundpipe", defer_w=True))
    costs = cost_context(plan, sc)
    trace, times = list_timed_times(plan, sc, costs)
    assert memory_timeline(plan, trace, costs, times) == memory_timeline(plan, trace, costs)


def test_a_graph_keyed_by_equal_copies_times_the_same():
    """The index finds nodes by identity, as rpsim.ir.deps builds them; a graph whose predecessor dicts
    hold equal copies of the nodes (and a plan whose lanes hold copies) falls back to equality."""
    sc = scenario("4090x4", 2, "stage")
    plan = make_plan(sc, PlanRequest("gpipe"))
    graph = dependency_graph(plan)
    copy = nx.DiGraph()
    for u, v, d in graph.edges(data=True):
        copy.add_edge((u[0], Action(u[1].kind, u[1].stage, u[1].mb, u[1].it, u[1].phase, u[1].chunk,
                                    u[1].peer)), v, **d)
    copy.add_nodes_from(graph.nodes)
    costs, topo = cost_context(plan, sc), build_topology(sc.server, sc.profile)
    assert list_schedule(plan, copy, costs, topo) == reference_schedule(plan, graph, costs, topo, 0.0)
