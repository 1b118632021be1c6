"""What the pcie lowering adds, checked against the documented semantics (passes/weights.py,
passes/activations.py, roundpipe.md): per-job weight LOADs, FREEs and gradient OFFLOADs, CPU optimizer
STEPs, host-staged activations for RoundPipe and 4090s, P2P for resident baselines on NVLink, and the
async (staleness 1) versus sync ordering of LOADs after STEPs in the dependency graph."""
from __future__ import annotations

from collections import Counter
from functools import cache

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.catalog import load_server
from rpsim.costs import ModelCosts, model_costs
from rpsim.ir import CPU, Action, Plan
from rpsim.ir.dataflow import inputs_of
from rpsim.ir.deps import dependency_graph
from rpsim.ir.validate import check_plan
from rpsim.partition import fixed_partition, parse_partition_spec
from rpsim.passes import LoweringContext, lower
from rpsim.schedules import get_schedule
from rpsim.schedules.base import BuildOptions
from rpsim.specs import ModelSpec, TrainingSpec

BACKWARD = ("B", "FB", "I", "W")


@cache
def _costs(n_layers: int) -> ModelCosts:
    model = ModelSpec(name="tiny", n_layers=n_layers, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                      mlp_width=512, vocab=1024)
    return model_costs(model, TrainingSpec(seq_len=128, global_batch=8, mb_size=2), load_server("4090x1").gpu)


def _lower(plan: Plan, server: str, weights: str = "auto") -> Plan:
    low = lower(plan, "pcie", LoweringContext(_costs(plan.partition.n_layers - 2), load_server(server), weights))
    check_plan(low)
    return low


def _roundpipe(name: str, n_gpus: int, spec: str, n_layers: int, n_mb: int, n_iters: int) -> Plan:
    partition = parse_partition_spec(spec, n_layers, roundpipe=True)
    return get_schedule(name).build(n_gpus, partition, n_mb, BuildOptions(optimizer="async", n_iters=n_iters))


def _one_f_one_b(n_gpus: int, n_mb: int, n_iters: int = 1) -> Plan:
    counts = [1 + (s % 2) for s in range(n_gpus)]
    return get_schedule("1f1b").build(n_gpus, fixed_partition(counts, sum(counts)), n_mb,
                                      BuildOptions(n_iters=n_iters))


def _jobs(plan: Plan, gpu: int, stage_bound: bool) -> list[tuple[str, int, int, int, list[Action]]]:
    """(phase, stage, first mb, iteration, actions) per job, from the docs: with stage-bound placement all
    of a stage's actions in one iteration (phase F: the partitions coincide); otherwise a maximal run of
    one stage, phase and iteration."""
    runs: list[tuple[tuple[str, int, int], list[Action]]] = []
    for a in plan.lane(gpu, "compute"):
        if not a.is_compute:
            continue
        key = ("F" if stage_bound or a.kind == "F" else "B", a.stage, a.it)
        same = [acts for k, acts in runs if k == key] if stage_bound else (
            [runs[-1][1]] if runs and runs[-1][0] == key else [])
        if same:
            same[0].append(a)
        else:
            runs.append((key, [a]))
    return [(phase, stage, acts[0].mb, it, acts) for (phase, stage, it), acts in runs]


def _check_streamed_weights(low: Plan, stage_bound: bool) -> None:
    """Every job: one LOAD per layer of its stage on param_h2d before its first action, a FREE right after
    its last action on the compute lane, and (backward jobs) one OFFLOAD per layer after its last action;
    one CPU STEP per layer and iteration, after that layer's OFFLOADs."""
    graph = dependency_graph(low)
    n_loads = 0
    for gpu in range(low.n_gpus):
        compute = list(low.lane(gpu, "compute"))
        loads, offloads = set(low.lane(gpu, "param_h2d")), set(low.lane(gpu, "grad_d2h"))
        assert len(loads) == len(low.lane(gpu, "param_h2d"))
        jobs = _jobs(low, gpu, stage_bound)
        assert jobs, f"gpu {gpu} runs nothing"
        for phase, stage, mb, it, acts in jobs:
            lo, hi = low.partition.ranges(phase)[stage]
            for layer in range(lo, hi):
                load = Action("LOAD", stage, mb, it, phase, chunk=layer)
                assert load in loads, f"gpu {gpu}: no {load} for the job starting at {acts[0]}"
                assert graph.has_edge((gpu, load), (gpu, acts[0]))
                n_loads += 1
                off = Action("OFFLOAD", stage, mb, it, phase, chunk=layer)
                if any(a.kind in BACKWARD for a in acts):
                    assert off in offloads and graph.has_edge((gpu, acts[-1]), (gpu, off))
                else:
                    assert off not in offloads
            free = Action("FREE", stage, mb, it, phase)
            assert compute[compute.index(acts[-1]) + 1] == free
    assert n_loads == sum(len(low.lane(g, "param_h2d")) for g in range(low.n_gpus))  # nothing else loaded
    steps = low.lane(CPU, "optimizer")
    n_layers = low.partition.n_layers
    assert Counter((a.kind, a.chunk, a.it) for a in steps) == Counter(
        ("STEP", layer, it) for layer in range(n_layers) for it in range(low.n_iters))
    for step in steps:
        offs = [n for n in graph.predecessors((CPU, step)) if n[1].kind == "OFFLOAD"]
        assert offs and all(n[1].chunk == step.chunk and n[1].it == step.it for n in offs)
        n_jobs = sum(1 for g in range(low.n_gpus) for a in low.lane(g, "grad_d2h")
                     if (a.chunk, a.it) == (step.chunk, step.it))
        assert len(offs) == n_jobs  # the step waits for every gradient download of its layer


def _check_host_staged(low: Plan) -> None:
    """No P2P; each compute action that reads another action's output gets it through an ACT_IN on its own
    GPU, fed by the producer's ACT_OUT (stateless GPUs upload even what they produced themselves)."""
    kinds = Counter(a.kind for _, _, a in low.items())
    assert kinds["SEND"] == kinds["RECV"] == 0
    assert not any(lane in ("p2p", "p2p_recv") for _, lane in low.lanes)
    graph = dependency_graph(low)
    for gpu, x in low.compute_actions():
        feeds = [n for n in graph.predecessors((gpu, x)) if graph.edges[n, (gpu, x)]["why"] == "data"]
        if inputs_of(x, low.partition):
            assert feeds == [(gpu, Action("ACT_IN", x.stage, x.mb, x.it, x.partition_phase))]
            ups = [n for n in graph.predecessors(feeds[0]) if graph.edges[n, feeds[0]]["why"] == "data"]
            assert ups and all(n[1].kind == "ACT_OUT" for n in ups)
        else:
            assert feeds == []


CASES = [("roundpipe", 3, "2,2|0,1,1,1,1", 4, 4, 1), ("roundpipe", 2, "1,1|1,1,1", 3, 5, 3),
         ("roundpipe-sync", 4, "3|0,1,2", 3, 6, 2), ("roundpipe", 1, "2|0,2", 2, 3, 2)]


@pytest.mark.parametrize(("name", "n_gpus", "spec", "n_layers", "n_mb", "n_iters"), CASES)
def test_roundpipe_on_4090s_streams_every_job_and_stages_activations_through_host(
        name, n_gpus, spec, n_layers, n_mb, n_iters):
    low = _lower(_roundpipe(name, n_gpus, spec, n_layers, n_mb, n_iters), f"4090x{n_gpus}")
    assert low.options["weights"] == "streamed"
    _check_streamed_weights(low, stage_bound=False)
    _check_host_staged(low)


@settings(max_examples=15, deadline=None)
@given(n_gpus=st.integers(1, 5), n_mb=st.integers(1, 9), n_iters=st.integers(1, 3),
       spec=st.sampled_from(["2,2|0,1,1,1,1", "4|0,1,1,1,1", "1,1,1|1,1,1,1", "1,1|2,1,1"]))
def test_roundpipe_lowering_semantics_hold_for_any_size(n_gpus, n_mb, n_iters, spec):
    low = _lower(_roundpipe("roundpipe", n_gpus, spec, 4, n_mb, n_iters), f"4090x{n_gpus}")
    _check_streamed_weights(low, stage_bound=False)
    _check_host_staged(low)


def test_roundpipe_never_uses_p2p_even_on_nvlink():
    low = _lower(_roundpipe("roundpipe", 3, "2,2|0,1,1,1,1", 4, 4, 1), "h100x3")
    _check_host_staged(low)


def test_resident_1f1b_on_h100s_sends_activations_and_gradients_peer_to_peer():
    n, m = 3, 4
    low = _lower(_one_f_one_b(n, m), "h100x3", "resident")
    assert low.options["weights"] == "resident"
    kinds = Counter(a.kind for _, _, a in low.items())
    assert kinds["LOAD"] == kinds["OFFLOAD"] == kinds["FREE"] == kinds["ACT_IN"] == kinds["ACT_OUT"] == 0
    # Stage s's output goes to GPU s+1, the gradient of stage s+1's input comes back: one pair each.
    for s in range(n - 1):
        for mb in range(m):
            assert Action("SEND", s, mb, 0, "F", peer=s + 1) in low.lane(s, "p2p")
            assert Action("RECV", s, mb, 0, "F", peer=s) in low.lane(s + 1, "p2p_recv")
            assert Action("SEND", s + 1, mb, 0, "B", peer=s) in low.lane(s + 1, "p2p")
            assert Action("RECV", s + 1, mb, 0, "B", peer=s + 1) in low.lane(s, "p2p_recv")
    assert kinds["SEND"] == kinds["RECV"] == 2 * (n - 1) * m
    graph = dependency_graph(low)
    for gpu, x in low.compute_actions():
        for n_, _ in graph.in_edges((gpu, x)):
            assert not graph.edges[n_, (gpu, x)].get("hop"), "a cross-GPU read without a transfer"
    # Resident weights: one optimizer step per stage on its GPU, right after the stage's last backward.
    for gpu in range(n):
        compute = low.lane(gpu, "compute")
        assert [a for a in compute if a.kind == "STEP"] == [Action("STEP", gpu, None, 0, "F")]
        assert compute[-1].kind == "STEP" and compute[-2] == Action("B", gpu, m - 1, 0)


def test_resident_1f1b_on_4090s_stages_activations_through_host():
    low = _lower(_one_f_one_b(2, 3), "4090x2", "resident")
    kinds = Counter(a.kind for _, _, a in low.items())
    assert kinds["SEND"] == kinds["RECV"] == kinds["LOAD"] == 0
    # Only what crosses GPUs moves: F0 -> GPU 1 and B1's input gradient -> GPU 0, per microbatch.
    assert low.lane(0, "d2h") == tuple(Action("ACT_OUT", 0, mb, 0, "F") for mb in range(3))
    assert low.lane(1, "h2d") == tuple(Action("ACT_IN", 1, mb, 0, "F") for mb in range(3))
    assert sorted(low.lane(1, "d2h")) == sorted(Action("ACT_OUT", 1, mb, 0, "B") for mb in range(3))
    assert sorted(low.lane(0, "h2d")) == sorted(Action("ACT_IN", 0, mb, 0, "B") for mb in range(3))


@pytest.mark.parametrize("name", ["1f1b", "gpipe"])
def test_streamed_fixed_placement_loads_each_stage_once_per_iteration(name):
    counts = [2, 1, 1]
    plan = get_schedule(name).build(3, fixed_partition(counts, 4), 4, BuildOptions(n_iters=2))
    low = _lower(plan, "4090x3", "stream")
    assert low.options["weights"] == "streamed"
    _check_streamed_weights(low, stage_bound=True)


def _step_preds(graph: nx.DiGraph, node: tuple[int, Action]) -> set[tuple[int, int]]:
    return {(n[1].chunk, n[1].it) for n in graph.predecessors(node) if n[1].kind == "STEP"}


@pytest.mark.parametrize(("name", "lag"), [("roundpipe", 2), ("roundpipe-sync", 1)])
def test_loads_wait_for_the_step_one_or_two_iterations_back(name, lag):
    """Async (staleness 1): iteration i computes with the weights after step i-2, so its LOADs wait for
    STEP i-2 and not for STEP i-1; sync: they wait for STEP i-1."""
    low = _lower(_roundpipe(name, 3, "2,2|0,1,1,1,1", 4, 4, 4), "4090x3")
    assert low.optimizer == ("async" if lag == 2 else "sync")
    graph = dependency_graph(low)
    steps = {(a.chunk, a.it): (CPU, a) for a in low.lane(CPU, "optimizer")}
    n_checked = 0
    for gpu in range(low.n_gpus):
        for load in low.lane(gpu, "param_h2d"):
            want = {(load.chunk, load.it - lag)} if load.it >= lag else set()
            assert _step_preds(graph, (gpu, load)) == want, f"gpu {gpu}: {load}"
            if load.it >= 1 and lag == 2:  # not even indirectly: the step of i-1 overlaps iteration i
                assert not nx.has_path(graph, steps[(load.chunk, load.it - 1)], (gpu, load))
            n_checked += load.it >= lag
    assert n_checked > 0


def test_streamed_sync_baseline_loads_wait_for_the_previous_step():
    low = _lower(_one_f_one_b(2, 3, n_iters=2), "4090x2", "stream")
    graph = dependency_graph(low)
    loads = [(g, a) for g in range(2) for a in low.lane(g, "param_h2d")]
    assert {a.it for _, a in loads} == {0, 1}
    for node in loads:
        assert _step_preds(graph, node) == ({(node[1].chunk, 0)} if node[1].it == 1 else set())
