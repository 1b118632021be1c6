"""The SimPy engine against the pure list-scheduling timer (equal where no two transfers contend), its
determinism, makespan >= critical path, and link sharing and priorities end to end through simulate()."""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from functools import cache

import networkx as nx
import pytest
import simpy
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from rpsim.costs.profile import profile_from_dict
from rpsim.errors import SpecError
from rpsim.ir import Action, Partition, Plan
from rpsim.ir.deps import dependency_graph
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import Scenario, make_scenario
from rpsim.schedules import SCHEDULES as _SCHEDULES
from rpsim.sim.action_costs import duration_s, transfer_bytes
from rpsim.sim.list_timer import list_timed
from rpsim.sim.network import FlowNetwork
from rpsim.sim.simulate import cost_context, simulate
from rpsim.sim.topology import Topology, build_topology
from rpsim.sim.trace import Trace
from rpsim.specs import ModelSpec, TrainingSpec

REL = 1e-9
N_LAYERS = 8
SCHEDULES = tuple(_SCHEDULES)
TRANSFERS = ("LOAD", "OFFLOAD", "ACT_OUT", "ACT_IN", "SEND")


@cache
def _base(gpus: str, n_mb: int) -> Scenario:
    model = ModelSpec(name="tiny", n_layers=N_LAYERS, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                      mlp_width=512, vocab=1024)
    return make_scenario(model, gpus, TrainingSpec(seq_len=128, global_batch=2 * n_mb, mb_size=2))


def scenario(gpus: str, n_mb: int, fwd_ms: list[int], bwd_ms: list[int], hop_ms: int = 0) -> Scenario:
    """The tiny model on `gpus` with per-transformer-layer times in ms (embedding and head cost 0)."""
    layers = [{"name": "embed", "forward_s": 0.0, "backward_s": 0.0}]
    layers += [{"name": f"layer.{i}", "forward_s": f / 1e3, "backward_s": b / 1e3}
               for i, (f, b) in enumerate(zip(fwd_ms, bwd_ms, strict=True))]
    layers += [{"name": "head", "forward_s": 0.0, "backward_s": 0.0}]
    profile = profile_from_dict({"format": "rpsim.profile", "version": 1, "layers": layers,
                                 "links": {"hop_s": hop_ms / 1e3}})
    sc = _base(gpus, n_mb)
    return replace(sc, costs=profile.apply(sc.costs), profile=profile)


def _ends(trace: Trace) -> dict[tuple[int, str], float]:
    return {(e.gpu, e.action): e.end_s for e in trace.events}


def _assert_same_times(engine: Trace, timer: Trace) -> None:
    assert engine.makespan_s == pytest.approx(timer.makespan_s, rel=REL)
    want, got = _ends(timer), _ends(engine)
    assert got.keys() == want.keys()
    for key, end_s in want.items():
        assert got[key] == pytest.approx(end_s, rel=REL, abs=1e-12), key


def _make_plan(sc: Scenario, req: PlanRequest):
    """make_plan, skipping what a schedule refuses by name: too few microbatches (DualPipeV needs
    M >= 2N) or too few layers for its stages (ZB-V on 8 GPUs needs 16)."""
    try:
        return make_plan(sc, req)
    except SpecError as e:
        assert "n_mb" in str(e) or "cannot split" in str(e), e
        assume(False)
        raise


layer_ms = st.lists(st.integers(1, 20), min_size=N_LAYERS, max_size=N_LAYERS)


@settings(max_examples=40, deadline=None)
@given(n_gpus=st.integers(1, 4), n_mb=st.integers(1, 6), schedule=st.sampled_from(SCHEDULES),
       fidelity=st.sampled_from(["ideal", "hop"]), fwd=layer_ms, bwd=layer_ms, hop_ms=st.integers(0, 5))
def test_engine_equals_list_timer_without_transfers(n_gpus, n_mb, schedule, fidelity, fwd, bwd, hop_ms):
    sc = scenario(f"4090x{n_gpus}", n_mb, fwd, bwd, hop_ms)
    plan = _make_plan(sc, PlanRequest(schedule, fidelity=fidelity))
    _assert_same_times(simulate(plan, sc, stop_at_steady=False).trace, list_timed(plan, sc))


def _flows(topo: Topology, gpu: int, kind: str, peer: int | None) -> list[tuple[str, ...]]:
    if kind == "SEND":
        return [topo.p2p_path(gpu, peer)]  # type: ignore[arg-type]
    return list(topo.h2d_paths[gpu] if kind in ("LOAD", "ACT_IN") else topo.d2h_paths[gpu])


def contention_free(plan: Plan, trace: Trace, topo: Topology) -> bool:
    """True when, at every instant, the transfers in flight could all run at their solo rates: on every
    resource the sum of their (upper-bounded) demands fits its capacity, duplex slowdown included."""
    moving = []
    for e in trace.events:
        if e.kind in TRANSFERS and e.end_s > e.start_s:
            a = next(x for x in plan.lane(e.gpu, e.lane) if str(x) == e.action)
            demand: dict[str, float] = {}
            for path in _flows(topo, e.gpu, e.kind, a.peer):
                solo = min(topo.capacity_bytes_per_s[r] for r in path)
                for r in path:
                    demand[r] = min(topo.capacity_bytes_per_s[r], demand.get(r, 0.0) + solo)
            moving.append((e.start_s, e.end_s, demand))
    for t, _, _ in moving:
        load: dict[str, float] = {}
        for s, e, demand in moving:
            if s <= t < e:
                for r, d in demand.items():
                    load[r] = load.get(r, 0.0) + d
        capacity = dict(topo.capacity_bytes_per_s)
        for a, b in topo.duplex_pairs:
            if a in load and b in load:
                capacity[a] *= topo.duplex_factor
                capacity[b] *= topo.duplex_factor
        if any(d > capacity[r] * (1 + 1e-12) for r, d in load.items()):
            return False
    return True


@settings(max_examples=40, deadline=None)
@given(n_gpus=st.sampled_from([1, 2, 3, 4, 8]), n_mb=st.integers(1, 6), schedule=st.sampled_from(SCHEDULES),
       fwd=layer_ms, bwd=layer_ms)
def test_engine_equals_list_timer_where_no_transfers_contend(n_gpus, n_mb, schedule, fwd, bwd):
    sc = scenario(f"4090x{n_gpus}", n_mb, fwd, bwd)
    plan = _make_plan(sc, PlanRequest(schedule, fidelity="pcie"))
    engine, timer = simulate(plan, sc, stop_at_steady=False).trace, list_timed(plan, sc)
    if not contention_free(plan, engine, build_topology(sc.server, sc.profile)):
        event("transfers contend: engine only bounded below")
        # Other traffic only takes bandwidth: every copy still crosses its own GPU link, which bounds it alone.
        assert engine.makespan_s >= timer.makespan_s * (1 - REL)
        return
    event("contention-free: compared")
    _assert_same_times(engine, timer)


@pytest.mark.parametrize("schedule, n_gpus, n_mb", [("gpipe", 3, 4), ("1f1b", 3, 4), ("1f1b", 8, 1),
                                                     ("interleaved", 4, 1), ("looped-bfs", 3, 2)])
def test_contention_free_pcie_plans_exist_and_match(schedule, n_gpus, n_mb):
    """Keeps the property above from passing vacuously: these pcie plans move data and do not contend
    (4090x8: two sockets, so every copy is two interleaved flows)."""
    sc = scenario(f"4090x{n_gpus}", n_mb, [5] * N_LAYERS, [10] * N_LAYERS)
    plan = _make_plan(sc, PlanRequest(schedule, fidelity="pcie"))
    engine = simulate(plan, sc, stop_at_steady=False).trace
    assert any(e.kind in TRANSFERS and e.bytes > 0 for e in engine.events)
    assert contention_free(plan, engine, build_topology(sc.server, sc.profile))
    _assert_same_times(engine, list_timed(plan, sc))


def test_list_timer_splits_interleaved_copies_over_sockets_like_the_engine():
    # 4090x8 has two sockets and interleaved host memory: each copy is two flows sharing the GPU link.
    sc = scenario("4090x8", 2, [5] * N_LAYERS, [10] * N_LAYERS)
    plan = make_plan(sc, PlanRequest("gpipe", fidelity="pcie"))
    topo = build_topology(sc.server, sc.profile)
    copy = next(e for e in simulate(plan, sc).trace.events if e.kind == "ACT_IN")
    solo = min(topo.capacity_bytes_per_s[r] for r in topo.h2d_paths[copy.gpu][0])
    assert len(topo.h2d_paths[copy.gpu]) == 2
    assert copy.end_s - copy.start_s == pytest.approx(topo.latency_s + copy.bytes / solo, rel=REL)


def test_two_simulations_give_byte_identical_traces():
    sc = scenario("4090x4", 6, list(range(1, N_LAYERS + 1)), list(range(2, 2 * N_LAYERS + 2, 2)))
    texts = []
    for _ in range(2):
        plan = make_plan(sc, PlanRequest("roundpipe", fidelity="pcie"))
        result = simulate(plan, sc)
        texts.append(json.dumps(result.trace.to_json(), sort_keys=True)
                     + json.dumps(result.metrics, sort_keys=True))
    assert texts[0] == texts[1]
    assert '"kind": "LOAD"' in texts[0]  # the network (and its tie-breaking) took part


def critical_path_s(plan: Plan, sc: Scenario) -> float:
    """Longest path through the dependency graph; a transfer weighs its latency + each share's bytes at the
    smallest capacity on its path (no flow moves faster), a hop edge the profile's hop delay."""
    graph, ctx = dependency_graph(plan), cost_context(plan, sc)
    topo = build_topology(sc.server, sc.profile) if plan.level == "pcie" else None
    hop_s = sc.profile.hop_s if (plan.level == "hop" and sc.profile and sc.profile.hop_s) else 0.0
    end: dict = {}
    for node in nx.topological_sort(graph):
        gpu, a = node
        if a.kind not in TRANSFERS:
            weight = duration_s(ctx, a)
        elif topo is None:
            weight = 0.0
        else:
            paths = _flows(topo, gpu, a.kind, a.peer)
            share = transfer_bytes(ctx, a) / len(paths)
            weight = topo.latency_s + max(share / min(topo.capacity_bytes_per_s[r] for r in p) for p in paths)
        ready = max((end[p] + (hop_s if d.get("hop") else 0.0) for p, d in graph.pred[node].items()),
                    default=0.0)
        end[node] = ready + weight
    return max(end.values())


@settings(max_examples=30, deadline=None)
@given(n_gpus=st.sampled_from([2, 3, 4, 8]), n_mb=st.integers(1, 6), schedule=st.sampled_from(SCHEDULES),
       fidelity=st.sampled_from(["ideal", "hop", "pcie"]), fwd=layer_ms, bwd=layer_ms,
       hop_ms=st.integers(0, 5))
def test_makespan_is_at_least_the_critical_path(n_gpus, n_mb, schedule, fidelity, fwd, bwd, hop_ms):
    sc = scenario(f"4090x{n_gpus}", n_mb, fwd, bwd, hop_ms)
    plan = _make_plan(sc, PlanRequest(schedule, fidelity=fidelity))
    path_s = critical_path_s(plan, sc)
    busiest_lane_s = max(sum(duration_s(cost_context(plan, sc), a) for a in acts if a.kind not in TRANSFERS)
                         for acts in plan.lanes.values())
    assert path_s >= busiest_lane_s * (1 - REL) > 0  # the path includes every lane's chain
    assert simulate(plan, sc, stop_at_steady=False).trace.makespan_s >= path_s * (1 - REL)


# --- link sharing and priorities, end to end --------------------------------------------------------------

SWITCH_BOX = """
gpu = "rtx4090"
n_gpus = 2
p2p = "none"
host_numa = "local"
[host]
cores = 16
dram_gib = 256.0
adam_params_per_s = 2.0e9
[[sockets]]
name = "s0"
dram_bandwidth_gb_per_s = 1000.0
root_complex_gb_per_s = 1000.0
[[switches]]
name = "sw0"
socket = "s0"
uplink_gb_per_s = 10.0
[[gpus]]
count = 2
attach = "sw0"
h2d_efficiency = 0.8
d2h_efficiency = 0.8
"""


def _forward_plan(sc: Scenario, n_gpus: int, producers: list[int]) -> Plan:
    """Stage 0 of microbatch m runs on GPU producers[m] and downloads its output; GPU 0 runs stage 1 of
    every microbatch from host memory. Built by hand, at the pcie level, to time the copies alone."""
    n = len(sc.costs.layers)
    partition = Partition.same(((0, n // 2), (n // 2, n)))
    lanes: dict[tuple[int, str], list[Action]] = {}
    for m, g in enumerate(producers):
        lanes.setdefault((g, "compute"), []).append(Action("F", 0, m, 0))
        lanes.setdefault((g, "d2h"), []).append(Action("ACT_OUT", 0, m, 0, "F"))
    lanes.setdefault((0, "compute"), []).extend(Action("F", 1, m, 0) for m in range(len(producers)))
    lanes[(0, "h2d")] = [Action("ACT_IN", 1, m, 0, "F") for m in range(len(producers))]
    return Plan("hand", n_gpus, len(producers), partition, {k: tuple(v) for k, v in sorted(lanes.items())},
                level="pcie", options={"weights": "streamed"})


def _copy_s(trace: Trace, gpu: int, kind: str) -> float:
    e = next(e for e in trace.events if e.gpu == gpu and e.kind == kind)
    return e.end_s - e.start_s


@pytest.mark.parametrize("gpus, slowdown", [("switch", 2.0), ("4090x2", 1.0)])
def test_two_concurrent_activation_copies_on_one_link_take_twice_as_long(tmp_path, gpus, slowdown):
    # Behind one switch both GPUs' downloads cross its 10 GB/s uplink (each GPU link: 25 GB/s); on a box
    # without the switch each GPU has its own link and the copies do not slow each other.
    if gpus == "switch":
        (tmp_path / "switch.toml").write_text(SWITCH_BOX)
        gpus = str(tmp_path / "switch.toml")
    base = make_scenario(_base("4090x2", 2).model, gpus, _base("4090x2", 2).training)
    sc = replace(base, costs=scenario("4090x2", 2, [5] * N_LAYERS, [10] * N_LAYERS).costs)
    latency = build_topology(sc.server).latency_s
    alone = simulate(_forward_plan(sc, 2, [0]), sc).trace
    both = simulate(_forward_plan(sc, 2, [0, 1]), sc).trace
    starts = sorted(e.start_s for e in both.events if e.kind == "ACT_OUT")
    assert starts[0] == starts[1]  # the two downloads do run at once
    solo_s = _copy_s(alone, 0, "ACT_OUT") - latency
    assert _copy_s(both, 0, "ACT_OUT") - latency == pytest.approx(slowdown * solo_s, rel=REL)
    assert _copy_s(both, 1, "ACT_OUT") == pytest.approx(_copy_s(both, 0, "ACT_OUT"), rel=REL)


def test_activation_upload_goes_before_a_parameter_load_on_the_same_link():
    # Stage 0 on GPU 1, so GPU 0's link carries only the upload and the load (no duplex slowdown).
    sc = scenario("4090x2", 1, [5] * N_LAYERS, [10] * N_LAYERS)
    n = len(sc.costs.layers)
    plan = _forward_plan(sc, 2, [1])
    # One big LOAD of stage 1's first layer, free to start at 0 and still running when the upload starts.
    load = Action("LOAD", 1, 0, 0, "F", chunk=n // 2)
    free = Action("FREE", 1, 0, 0, "F")  # the job's weights are freed after it, as lowering does
    lanes = {**plan.lanes, (0, "param_h2d"): (load,), (0, "compute"): (*plan.lane(0, "compute"), free)}
    plan = replace(plan, lanes=dict(sorted(lanes.items())))
    sc = replace(sc, costs=sc.costs.with_layers(tuple(
        replace(x, weight_bytes=1e9) if i == n // 2 else x for i, x in enumerate(sc.costs.layers))))
    trace = simulate(plan, sc).trace
    topo = build_topology(sc.server)
    cap = min(topo.capacity_bytes_per_s[r] for r in topo.h2d_paths[0][0])
    up = next(e for e in trace.events if e.kind == "ACT_IN")
    lo = next(e for e in trace.events if e.kind == "LOAD")
    assert lo.start_s < up.start_s and up.end_s < lo.end_s  # they overlap on g0.h2d
    # Priority 0 runs as if alone; the load pauses for exactly the upload's bytes.
    assert up.end_s - up.start_s == pytest.approx(topo.latency_s + up.bytes / cap, rel=REL)
    assert lo.end_s == pytest.approx(topo.latency_s + (lo.bytes + up.bytes) / cap, rel=REL)
    assert math.isclose(lo.bytes, 1e9)


# --- FlowNetwork.transfers: one latency timer for a copy's per-socket shares ------------------------------

def _copies(batched: bool, seed: int) -> list[float]:
    """Four streams of two-share copies over shared links; each copy's completion time, in issue order."""
    rng = random.Random(seed)
    capacity = {"a": 10e9, "b": 7e9, "x": 4e9, "g0": 25e9, "g1": 25e9}
    shares = {0: [("a", "g0"), ("b", "x", "g0")], 1: [("a", "x", "g1"), ("b", "g1")]}
    plan = [[(rng.uniform(1e8, 1e9), rng.randrange(2), rng.choice([0.0, 1e-5])) for _ in range(20)]
            for _ in range(4)]
    env = simpy.Environment()
    net = FlowNetwork(env, capacity, [("g0", "g1", 0.6)])
    done: dict[tuple[int, int], float] = {}

    def stream(k: int):
        for i, (n_bytes, priority, latency_s) in enumerate(plan[k]):
            paths = shares[k % 2]
            events = net.transfers(paths, n_bytes, priority, latency_s) if batched else \
                [net.transfer(p, n_bytes, priority, latency_s) for p in paths]
            yield env.all_of(events)
            done[(k, i)] = env.now

    for k in range(4):
        env.process(stream(k))
    env.run()
    return [done[key] for key in sorted(done)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_shares_time_exactly_like_separate_transfers(seed):
    assert _copies(True, seed) == _copies(False, seed)
