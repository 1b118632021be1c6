"""What the dependency graph records while it is built (rpsim.ir.deps: graph.graph["acyclic"] and
["hop_edges"]) is what networkx finds on the finished graph, and the nodes and edges are the ones
add_nodes_from / add_edge would give (nodes and successors in the same order): random builder plans at every lowering level,
with and without an injected back edge."""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.errors import SpecError
from rpsim.ir.deps import dependency_graph
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import make_scenario
from rpsim.schedules import SCHEDULES
from rpsim.specs import TrainingSpec

LEVELS = ("ideal", "hop", "pcie")


def rebuilt_by_networkx(g: nx.DiGraph) -> nx.DiGraph:
    h = nx.DiGraph()
    h.add_nodes_from(g.nodes)
    for u, v, d in g.edges(data=True):
        h.add_edge(u, v, **d)
    return h


@settings(max_examples=30, deadline=None)
@given(schedule=st.sampled_from(tuple(SCHEDULES)), level=st.sampled_from(LEVELS),
       gpus=st.sampled_from(("4090x2", "h100x2", "4090x4")), n_mb=st.sampled_from((4, 8)),
       back_edge=st.booleans(), data=st.data())
def test_recorded_facts_equal_networkx(schedule, level, gpus, n_mb, back_edge, data):
    sc = make_scenario("qwen3-1.7b", gpus, TrainingSpec(seq_len=256, global_batch=n_mb, mb_size=1))
    try:
        plan = make_plan(sc, PlanRequest(schedule, fidelity=level))
    except SpecError:  # a structure that does not fit this GPU count or microbatching
        return
    if back_edge:  # an edge from some node back to an earlier one on the same lane: a cycle
        lane = data.draw(st.sampled_from([k for k, v in plan.lanes.items() if len(v) > 1]))
        i = data.draw(st.integers(1, len(plan.lanes[lane]) - 1))
        gpu = lane[0]
        plan = replace(plan, extra_edges=(*plan.extra_edges,
                                          ((gpu, plan.lanes[lane][i]), (gpu, plan.lanes[lane][i - 1]))))
    g = dependency_graph(plan)
    assert g.graph["acyclic"] == nx.is_directed_acyclic_graph(g) == (not back_edge)
    hops = [(u, v) for u, v, d in g.edges(data=True) if d.get("hop")]
    assert g.graph["hop_edges"] == hops
    h = rebuilt_by_networkx(g)
    assert list(h.nodes) == list(g.nodes)
    for n in g.nodes:
        assert list(h.succ[n].items()) == list(g.succ[n].items())
        assert dict(h.pred[n]) == dict(g.pred[n])  # (predecessor order is edge insertion order, not rebuilt here)
