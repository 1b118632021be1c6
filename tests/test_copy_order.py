"""rpexec's copy order (rpexec.copy_order): a backward's ACT_OUT is issued, and done, before the gradient
OFFLOADs the same backward makes ready, as rpsim's link priority orders them; on CPU and on a GPU."""
from __future__ import annotations

import json

import networkx as nx
import pytest

from rpexec.cli import main as rpexec_main
from rpexec.copy_order import COPY_DIRECTION, copy_order_edges, with_copy_order
from rpsim.ir.action import COMPUTE_KINDS
from rpsim.ir.deps import dependency_graph
from rpsim.ir.planio import load_plan
from tests.rpexec_helpers import TINY, export, write_config


@pytest.fixture(scope="module")
def roundpipe_plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("copy-order")
    config = write_config(tmp, TINY)
    plans = {s: export(tmp, config, s) for s in ("roundpipe", "roundpipe-sync", "gpipe")}
    plans["roundpipe-sync-1gpu"] = export(tmp, config, "roundpipe-sync", "h200x1")
    return plans


def offload_makers(graph: nx.DiGraph) -> dict:
    """Each OFFLOAD -> the compute actions on its GPU it waits for."""
    return {n: [p for p in graph.predecessors(n) if p[0] == n[0] and p[1].kind in COMPUTE_KINDS]
            for n in graph.nodes if n[1].kind == "OFFLOAD"}


@pytest.mark.parametrize("schedule", ["roundpipe", "roundpipe-sync"])
def test_every_download_after_a_backward_waits_for_that_backwards_activation_copy(roundpipe_plans, schedule):
    graph = dependency_graph(load_plan(roundpipe_plans[schedule]))
    edges = copy_order_edges(graph)
    assert edges, "a RoundPipe plan downloads gradients and activation gradients after its backwards"
    expected = {(act_out, off) for off, makers in offload_makers(graph).items() for m in makers
                for act_out in graph.successors(m) if act_out[0] == m[0] and act_out[1].kind == "ACT_OUT"}
    assert set(edges) == expected
    for first, then in edges:
        assert first[0] == then[0] and COPY_DIRECTION[first[1].kind] == COPY_DIRECTION[then[1].kind]
    ordered = with_copy_order(graph)
    assert nx.is_directed_acyclic_graph(ordered)
    assert all(ordered.edges[e]["why"] == "copy_order" for e in expected)


def test_a_plan_without_downloads_gets_no_copy_order(roundpipe_plans):
    graph = dependency_graph(load_plan(roundpipe_plans["gpipe"]))  # weights resident: no OFFLOADs
    assert copy_order_edges(graph) == []


def test_an_edge_that_would_close_a_cycle_is_left_out():
    from rpsim.ir import Action
    b, act_out, off = (0, Action("B", 0, 0, 0)), (0, Action("ACT_OUT", 0, 0, 0)), (0, Action("OFFLOAD", 0, 0, 0, chunk=0))
    graph = nx.DiGraph([(b, act_out), (b, off), (off, act_out)])  # the plan itself orders the download first
    assert copy_order_edges(graph) == [(act_out, off)]
    ordered = with_copy_order(graph)
    assert not ordered.has_edge(act_out, off) and nx.is_directed_acyclic_graph(ordered)


def run_trace(plan, tmp_path, order: str, device: str = "cpu") -> list[dict]:
    trace = tmp_path / f"trace-{order}.json"
    n_iters = 2 * json.loads(plan.read_text())["n_iters"]
    code = rpexec_main(["run", str(plan), "--device", device, "--iters", str(n_iters), "--copy-order", order,
                        "--trace", str(trace), "--check-grads"])
    assert code == 0
    return json.loads(trace.read_text())["events"]


def downloads_before_their_activation_copy(events: list[dict]) -> tuple[int, int]:
    """(OFFLOADs that started before the ACT_OUT of their backward ended, OFFLOADs with such an ACT_OUT)."""
    act_out = {(e["gpu"], e["stage"], e["mb"], e["it"]): e for e in events if e["kind"] == "ACT_OUT"}
    early = paired = 0
    for e in events:
        first = act_out.get((e["gpu"], e["stage"], e["mb"], e["it"])) if e["kind"] == "OFFLOAD" else None
        if first is not None and ".pB" in first["action"]:
            paired += 1
            early += e["start_s"] < first["end_s"]
    return early, paired


@pytest.fixture
def slow_activation_copies(monkeypatch):
    """ACT_OUT's handler starts 30 ms late, so a download not held back by the copy order starts first."""
    import time

    from rpexec import runtime
    act_out = runtime.HANDLERS["ACT_OUT"]

    def late(*args):
        time.sleep(0.03)
        return act_out(*args)
    monkeypatch.setitem(runtime.HANDLERS, "ACT_OUT", late)


@pytest.mark.parametrize("schedule", ["roundpipe", "roundpipe-sync"])
def test_cpu_run_issues_activation_copies_first_and_matches_the_reference(roundpipe_plans, tmp_path, schedule,
                                                                         slow_activation_copies):
    plan = roundpipe_plans[schedule]
    early, paired = downloads_before_their_activation_copy(run_trace(plan, tmp_path, "activations-first"))
    assert paired > 0 and early == 0
    early, paired = downloads_before_their_activation_copy(run_trace(plan, tmp_path, "as-issued"))
    assert early > 0  # the check above can fail: without the order, the late activation copies go after


def test_unknown_copy_order_is_a_user_error(roundpipe_plans, capsys):
    assert rpexec_main(["run", str(roundpipe_plans["roundpipe"]), "--copy-order", "fifo"]) == 2
    err = capsys.readouterr().err
    assert "--copy-order" in err and "activations-first" in err and "as-issued" in err


torch = pytest.importorskip("torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_copy_engine_serves_activation_copies_first(roundpipe_plans, tmp_path):
    early, paired = downloads_before_their_activation_copy(run_trace(roundpipe_plans["roundpipe-sync-1gpu"], tmp_path,
                                                                     "activations-first", "cuda"))
    assert paired > 0 and early == 0
