"""rpexec.issue_times: when the lane threads issue each action on rpsim's predicted timeline, and the
pool sizing that counts a buffer from its copy's issue (rpexec.warmup.pool_demand)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rpexec.checks import model_and_shape
from rpexec.issue_times import host_waits_for_end, issue_times_s
from rpexec.model import skeleton_layers
from rpexec.warmup import pool_demand
from rpsim.ir import CPU
from rpsim.ir.deps import dependency_graph
from rpsim.ir.planio import load_plan
from rpsim.scenario import scenario_from_setup
from rpsim.sim.simulate import simulate
from tests.rpexec_helpers import TINY, export, write_config


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("issue")
    plan = load_plan(export(tmp, write_config(tmp, TINY), "roundpipe", "4090x2"))
    return plan, simulate(plan, scenario_from_setup(plan.setup, plan.n_gpus)).trace


def test_issue_follows_the_interpreters_waits(predicted):
    plan, trace = predicted
    issued = issue_times_s(plan, trace)
    events = {(e.gpu, e.action): e for e in trace.events}
    graph = dependency_graph(plan)
    lane_of = {(g, a): lane for (g, lane), acts in plan.lanes.items() for a in acts}
    assert set(issued) == set(graph.nodes)
    ahead = 0
    for node, t in issued.items():
        e = events[(node[0], str(node[1]))]
        if node[0] == CPU:
            assert t == e.end_s  # the optimizer lane runs its STEP itself
            continue
        assert t <= e.start_s + 1e-12  # nothing is issued after the GPU started it
        ahead += t < e.start_s - 1e-9
        for p, edge in graph.pred[node].items():
            pe = events[(p[0], str(p[1]))]
            if edge["why"] != "lane" and host_waits_for_end(node, lane_of[node], edge["why"]):
                assert t >= min(pe.end_s, e.start_s) - 1e-12
            else:
                assert t >= min(issued[p], e.start_s) - 1e-12
    assert ahead > 0  # some actions are issued before their GPU starts them: that is the point


def test_counting_from_issue_never_needs_fewer_buffers(predicted, monkeypatch):
    """A buffer held from an earlier moment (issue <= start) can only raise the peak."""
    plan, trace = predicted
    model, seq, mb, _ = model_and_shape(plan)
    shapes = [[tuple(p.shape) for p in layer.parameters()] for layer in skeleton_layers(model)]
    args = (plan, trace, shapes, (mb, seq, model.hidden), torch.float32)
    grads, acts = pool_demand(*args)
    events = {(e.gpu, e.action): e for e in trace.events}
    import rpexec.issue_times as it
    monkeypatch.setattr(it, "issue_times_s",
                        lambda plan, trace: {n: events[(n[0], str(n[1]))].start_s for n in dependency_graph(plan).nodes})
    grads_at_start, acts_at_start = pool_demand(*args)
    assert sum(acts.values()) >= sum(acts_at_start.values()) > 0
    assert all(grads[k] >= n for k, n in grads_at_start.items())
