"""One dependency graph per plan: check_plan builds it, simulate reuses it; copies and pickles do not
carry it."""
from __future__ import annotations

import pickle
from dataclasses import replace

from rpsim.ir import deps
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import make_scenario
from rpsim.sim.simulate import simulate
from rpsim.specs import TrainingSpec


def test_make_plan_and_simulate_build_the_graph_once(monkeypatch):
    built = []
    build = deps._build_dependency_facts

    def counting(plan):
        built.append(plan)
        return build(plan)

    monkeypatch.setattr(deps, "_build_dependency_facts", counting)
    sc = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(global_batch=16))
    plan = make_plan(sc, PlanRequest("1f1b"))
    simulate(plan, sc)
    assert built == [plan]
    assert "_dependency_graph" not in plan.__dict__  # the networkx form is made only when asked for
    graph = deps.dependency_graph(plan)
    assert built == [plan] and graph.graph["facts"] is deps.dependency_facts(plan)


def test_a_new_plan_object_gets_its_own_graph():
    sc = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(global_batch=16))
    plan = make_plan(sc, PlanRequest("1f1b"))
    graph = deps.dependency_graph(plan)
    assert deps.dependency_graph(plan) is graph
    shipped = pickle.loads(pickle.dumps(plan))
    assert shipped == plan and deps.dependency_graph(shipped) is not graph
    assert deps.dependency_graph(replace(plan)) is not graph
    assert sorted(map(str, deps.dependency_graph(shipped).edges)) == sorted(map(str, graph.edges))
