"""Schedule-IR properties (issue 3) over random GPU counts, microbatch counts and partitions: every builder's
plan validates before and after lowering at every level, actions and plans round-trip through text and
JSON, injected cycles are reported as deadlocks, and RoundPipe dispatches slots by the paper's rule."""
from __future__ import annotations

import itertools
import json
from dataclasses import replace
from functools import cache

import networkx as nx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rpsim.catalog import load_server
from rpsim.costs import ModelCosts, model_costs
from rpsim.errors import PlanError, SpecError
from rpsim.ir import KINDS, Action, Partition, Plan, parse_action
from rpsim.ir.deps import dependency_graph
from rpsim.ir.planio import plan_from_json, plan_to_json
from rpsim.ir.validate import check_plan
from rpsim.partition import fixed_partition, roundpipe_partition
from rpsim.passes import LoweringContext, lower
from rpsim.schedules import SCHEDULES, get_schedule
from rpsim.schedules.base import BuildOptions
from rpsim.specs import ModelSpec, ServerSpec, TrainingSpec

FIXED = tuple(name for name, m in SCHEDULES.items() if m.TRAITS.placement.fixed)
SERVERS = ("4090", "h100")  # no P2P (host-staged activations) and NVLink P2P
LEVELS = ("ideal", "hop", "pcie")


@cache
def _server(kind: str, n_gpus: int) -> ServerSpec:
    return load_server(f"{kind}x{n_gpus}")


@cache
def _costs(n_layers: int, gpu_kind: str) -> ModelCosts:
    """Real per-layer costs of a tiny dense model with `n_layers` transformer layers."""
    model = ModelSpec(name=f"tiny-{n_layers}", n_layers=n_layers, hidden=256, n_heads=4, n_kv_heads=2,
                      head_dim=64, mlp_width=512, vocab=1024)
    return model_costs(model, TrainingSpec(seq_len=128, global_batch=8, mb_size=2), _server(gpu_kind, 1).gpu)


def _transformer_layers(p: Partition) -> int:
    return p.n_layers - 2  # pipeline layers are embedding, transformer layers, head


def _lowered(plan: Plan, level: str, kind: str, weights: str = "auto") -> Plan:
    ctx = LoweringContext(_costs(_transformer_layers(plan.partition), kind), _server(kind, plan.n_gpus), weights)
    return lower(plan, level, ctx)


def _compute_lanes(plan: Plan) -> dict[int, list[Action]]:
    return {g: [a for a in plan.lane(g, "compute") if a.is_compute] for g in range(plan.n_gpus)}


@st.composite
def fixed_partitions(draw: st.DrawFn, n_stages: int) -> Partition:
    counts = draw(st.lists(st.integers(1, 3), min_size=n_stages, max_size=n_stages))
    return fixed_partition(counts, sum(counts))


@st.composite
def roundpipe_partitions(draw: st.DrawFn) -> Partition:
    """FWD|BWD counts as the --partition grammar takes them: the first backward entry is the layers fused
    with the head; the rest of the layers are split independently into forward and backward stages."""
    n_layers = draw(st.integers(1, 8))
    fused = draw(st.integers(0, n_layers))
    rest = n_layers - fused

    def composition(total: int) -> list[int]:
        if total == 0:
            return []
        cuts = sorted(draw(st.sets(st.integers(1, total - 1), max_size=total - 1))) if total > 1 else []
        bounds = [0, *cuts, total]
        return [b - a for a, b in itertools.pairwise(bounds)]

    return roundpipe_partition(composition(rest), [fused, *composition(rest)], n_layers)


# ---- every builder's plan is valid before and after lowering --------------------------------------------

def _build_fixed(name: str, n_gpus: int, n_mb: int, data: st.DataObject, n_iters: int = 1) -> Plan:
    v = SCHEDULES[name].TRAITS.virtual_stages.resolve(data.draw(st.integers(1, 3)), 1)
    partition = data.draw(fixed_partitions(n_gpus * v))
    try:
        return get_schedule(name).build(n_gpus, partition, n_mb, BuildOptions(virtual_stages=v, n_iters=n_iters))
    except SpecError as e:  # too few microbatches for this schedule (DualPipeV: M >= 2N), said so
        assert "n_mb" in str(e), e
        assume(False)
        raise


@pytest.mark.parametrize("name", FIXED)
@settings(max_examples=25, deadline=None)
@given(data=st.data(), n_gpus=st.integers(1, 8), n_mb=st.integers(1, 32), n_iters=st.integers(1, 2))
def test_fixed_builders_validate_before_and_after_lowering(name, data, n_gpus, n_mb, n_iters):
    plan = _build_fixed(name, n_gpus, n_mb, data, n_iters)
    check_plan(plan)
    level = data.draw(st.sampled_from(LEVELS))
    kind = data.draw(st.sampled_from(SERVERS))
    weights = data.draw(st.sampled_from(("resident", "stream")))
    low = _lowered(plan, level, kind, weights)
    check_plan(low)
    assert low.level == level
    # Lowering adds transfers and never moves or reorders compute: each stage stays on its one GPU.
    assert _compute_lanes(low) == _compute_lanes(plan)
    gpu_of = SCHEDULES[name].TRAITS.placement.gpu_of
    for gpu, a in low.compute_actions():
        assert gpu == gpu_of(a.stage, n_gpus, len(plan.partition.bwd))
    if level == "pcie":
        assert low.residency == {"resident": "resident", "stream": "streamed"}[weights]
        assert low.options["weights"] == {"resident": "resident", "stream": "streamed"}[weights]
        streamed = any(a.kind == "LOAD" for _, _, a in low.items())
        assert streamed == (weights == "stream")
    # Determinism: the same inputs give the same plan, action for action.
    assert plan_to_json(_lowered(plan, level, kind, weights)) == plan_to_json(low)


def _roundpipe(name: str, n_gpus: int, partition: Partition, n_mb: int, round_size: int | None,
               n_iters: int, **rule: object) -> Plan:
    # The planner passes optimizer="async" to the roundpipe builder; roundpipe-sync forces "sync".
    options = BuildOptions(round_size=round_size, n_iters=n_iters, optimizer="async", **rule)  # type: ignore[arg-type]
    return get_schedule(name).build(n_gpus, partition, n_mb, options)


def _g0_rule(data: st.DataObject, partition: Partition) -> dict[str, object]:
    """Either the paper's rule or earliest-free with random stage-time estimates and hop delay."""
    if not data.draw(st.booleans()):
        return {}
    times = st.floats(0.1, 5.0)
    return {"g0_rule": "earliest-free", "hop_s": data.draw(st.sampled_from((0.0, 0.5))),
            "fwd_stage_s": tuple(data.draw(times) for _ in partition.fwd),
            "bwd_stage_s": tuple(data.draw(times) for _ in partition.bwd)}


roundpipe_inputs = {
    "name": st.sampled_from(("roundpipe", "roundpipe-sync")), "n_gpus": st.integers(1, 8),
    "n_mb": st.integers(1, 32), "partition": roundpipe_partitions(), "n_iters": st.integers(1, 3), "data": st.data()}


@settings(max_examples=60, deadline=None)
@given(**roundpipe_inputs)
def test_roundpipe_validates_before_and_after_lowering(name, n_gpus, n_mb, partition, n_iters, data):
    round_size = data.draw(st.none() | st.integers(1, n_mb + 2))
    defer_w = data.draw(st.booleans())
    plan = _roundpipe(name, n_gpus, partition, n_mb, round_size, n_iters, defer_w=defer_w,
                      **_g0_rule(data, partition))
    assert plan.optimizer == ("async" if name == "roundpipe" else "sync")
    check_plan(plan)
    kinds = {a.kind for _, a in plan.compute_actions()}
    has_b_jobs = len(partition.bwd) > 1  # the fused last stage stays one FB
    assert ({"I", "W"} <= kinds) == (defer_w and has_b_jobs)
    assert ("B" in kinds) == (has_b_jobs and not defer_w)
    level = data.draw(st.sampled_from(LEVELS))
    low = _lowered(plan, level, data.draw(st.sampled_from(SERVERS)))
    check_plan(low)
    assert _compute_lanes(low) == _compute_lanes(plan)
    if level == "pcie":  # stateless GPUs: weights always streamed, activations never peer to peer
        assert low.options["weights"] == "streamed"
        assert not any(a.kind in ("SEND", "RECV") for _, _, a in low.items())


# ---- RoundPipe's dispatch rule -----------------------------------------------------------------------

def _slots(p: Partition) -> list[tuple[str, int]]:
    """A round's S stage slots (roundpipe.md): forward stages shallow -> deep, the fused last stage, then
    the backward stages deep -> shallow."""
    n_b = len(p.bwd)
    return [("F", s) for s in range(len(p.fwd))] + [("FB", n_b - 1)] + [("B", s) for s in reversed(range(n_b - 1))]


def _round_sizes(n_mb: int, n_gpus: int, round_size: int | None) -> list[int]:
    """Documented rounds: of `round_size` (the last holds the rest), or by default max(1, M // N) rounds
    as even as possible, larger first, so each holds >= N microbatches when M >= N (roundpipe.md)."""
    if round_size:
        return [min(round_size, n_mb - s) for s in range(0, n_mb, round_size)]
    n_rounds = max(1, n_mb // n_gpus)
    return [n_mb // n_rounds + (1 if r < n_mb % n_rounds else 0) for r in range(n_rounds)]


def _round_and_slot(plan: Plan, sizes: list[int]) -> dict[Action, tuple[int, int]]:
    """Every compute action's (round, slot), rounds numbered over all iterations (dispatch does not
    restart at an iteration boundary)."""
    slots = _slots(plan.partition)
    round_of = [r for r, size in enumerate(sizes) for _ in range(size)]
    return {Action(kind, stage, m, it): (it * len(sizes) + round_of[m], i)
            for it in range(plan.n_iters) for m in range(plan.n_mb) for i, (kind, stage) in enumerate(slots)}


@settings(max_examples=60, deadline=None)
@given(**roundpipe_inputs)
def test_roundpipe_slot_i_of_round_r_runs_on_gpu_g0_plus_i(name, n_gpus, n_mb, partition, n_iters, data):
    round_size = data.draw(st.none() | st.integers(1, n_mb + 2))
    rule = _g0_rule(data, partition)
    plan = _roundpipe(name, n_gpus, partition, n_mb, round_size, n_iters, **rule)
    where = _round_and_slot(plan, _round_sizes(n_mb, n_gpus, round_size))
    gpu_of = {a: g for g, a in plan.compute_actions()}
    assert set(gpu_of) == set(where)
    n_slots = len(_slots(partition))
    if rule:
        # earliest-free chooses each round's g0 (round 0: every GPU free, ties -> gpu 0); slot i still
        # goes to (g0 + i) mod N. That g0 is the earliest-free GPU is checked on hand-made cases.
        g0 = {r: gpu_of[a] for a, (r, i) in where.items() if i == 0}
        assert g0[0] == 0
    else:  # paper: g0 advances by S per round
        g0 = {r: r * n_slots % n_gpus for r, _ in where.values()}
    assert gpu_of == {a: (g0[r] + i) % n_gpus for a, (r, i) in where.items()}
    # A GPU runs all microbatches of its slot, in order, before its next slot; slots in round order.
    for actions in _compute_lanes(plan).values():
        keys = [(*where[a], a.mb) for a in actions]
        assert keys == sorted(keys)
    # With at least as many slots as GPUs, every round uses every GPU.
    if n_slots >= n_gpus:
        for rnd in g0:
            assert {gpu_of[a] for a, (r, _) in where.items() if r == rnd} == set(range(n_gpus))


# ---- text and JSON round-trips -------------------------------------------------------------------------

small = st.integers(0, 40)


@st.composite
def actions(draw: st.DrawFn) -> Action:
    kind = draw(st.sampled_from(KINDS))
    compute = kind in ("F", "B", "FB", "I", "W")
    return Action(kind=kind, stage=draw(small if compute else st.none() | small),
                  mb=draw(small if compute else st.none() | small), it=draw(st.integers(0, 5)),
                  phase=draw(st.sampled_from((None, "F", "B"))), chunk=draw(st.none() | small),
                  peer=draw(st.none() | st.integers(0, 7)))


@settings(max_examples=400, deadline=None)
@given(a=actions())
def test_action_text_parses_back_equal(a):
    text = str(a)
    assert " " not in text and parse_action(text) == a


@pytest.mark.parametrize("text", ["3X5", "F", "3F5.q1", "3F5.pZ", "3F5.i", "3LOAD4.pF.c", "-1F0", "3F5 .i1"])
def test_malformed_action_text_is_a_plan_error(text):
    with pytest.raises(PlanError):
        parse_action(text)


@pytest.mark.parametrize("field", ["stage", "mb", "it", "chunk", "peer"])
@pytest.mark.parametrize("bad", [-1, True])
def test_actions_that_would_print_unparseable_text_are_refused(field, bad):
    with pytest.raises(PlanError, match=f"action {field} must be a non-negative integer"):
        Action(**{"kind": "F", "stage": 0, "mb": 0, field: bad})


def _json_round_trips(plan: Plan) -> None:
    data = plan_to_json(plan)
    assert plan_from_json(data) == plan
    assert plan_from_json(json.loads(json.dumps(data))) == plan


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(FIXED), n_gpus=st.integers(1, 4), n_mb=st.integers(1, 8), data=st.data())
def test_fixed_plans_round_trip_through_json(name, n_gpus, n_mb, data):
    plan = _build_fixed(name, n_gpus, n_mb, data)
    _json_round_trips(plan)
    _json_round_trips(_lowered(plan, "pcie", data.draw(st.sampled_from(SERVERS)),
                               data.draw(st.sampled_from(("resident", "stream")))))


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(("roundpipe", "roundpipe-sync")), n_gpus=st.integers(1, 4), n_mb=st.integers(1, 8),
       partition=roundpipe_partitions(), n_iters=st.integers(1, 3))
def test_roundpipe_plans_round_trip_through_json(name, n_gpus, n_mb, partition, n_iters):
    plan = _roundpipe(name, n_gpus, partition, n_mb, None, n_iters)
    _json_round_trips(plan)
    _json_round_trips(_lowered(plan, "pcie", "4090"))  # with its explicit edges (LPT issue windows)


def test_a_planner_plan_with_setup_round_trips_through_json():
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.scenario import make_scenario
    sc = make_scenario("qwen3-1.7b", "4090x2", TrainingSpec(global_batch=4, mb_size=1))
    plan = make_plan(sc, PlanRequest("roundpipe", partition="14,14|0,7,7,7,7", n_iters=2))
    assert plan.setup["model"]["n_layers"] == 28 and plan.setup["server"] == "4090x2"
    _json_round_trips(plan)


# ---- deadlocks -------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from((*FIXED, "roundpipe")), n_gpus=st.integers(1, 4), n_mb=st.integers(1, 6),
       level=st.sampled_from(("compute", "pcie")), data=st.data())
def test_an_edge_closing_any_path_is_reported_as_a_deadlock(name, n_gpus, n_mb, level, data):
    if name == "roundpipe":
        plan = _roundpipe(name, n_gpus, data.draw(roundpipe_partitions()), n_mb, None, 2)
    else:
        plan = _build_fixed(name, n_gpus, n_mb, data)
    if level == "pcie":
        plan = _lowered(plan, "pcie", data.draw(st.sampled_from(SERVERS)))
    check_plan(plan)
    graph = dependency_graph(plan)
    nodes = sorted(graph.nodes, key=lambda n: (n[0], str(n[1])))
    u = data.draw(st.sampled_from(nodes))
    later = sorted(nx.descendants(graph, u), key=lambda n: (n[0], str(n[1])))
    if not later:
        return  # a sink: no path from it to close
    v = data.draw(st.sampled_from(later))
    cyclic = replace(plan, extra_edges=(*plan.extra_edges, (v, u)))
    with pytest.raises(PlanError, match="deadlock"):
        check_plan(cyclic)


def test_a_backward_before_its_forward_on_one_gpu_is_a_deadlock():
    plan = get_schedule("1f1b").build(2, fixed_partition([1, 1], 2), 2, BuildOptions())
    lane = list(plan.lane(0, "compute"))  # 0F0 0F1 0B0 0B1
    i, j = lane.index(Action("F", 0, 0)), lane.index(Action("B", 0, 0))
    lane[i], lane[j] = lane[j], lane[i]
    swapped = plan.with_lanes({**plan.lanes, (0, "compute"): tuple(lane)})
    with pytest.raises(PlanError, match=r"deadlock: .*gpu0:0B0") as err:
        check_plan(swapped)
    assert "gpu0:0F0" in str(err.value)
    assert dependency_graph(plan).number_of_edges() > 0 and check_plan(plan) is not None
