"""Plan checks: lanes and kinds, completeness, uniqueness, data availability, weights before use, frees
after use, and no deadlock. Errors print the lanes of the GPUs involved with the action marked."""
from __future__ import annotations

from collections import Counter

from rpsim.errors import PlanError
from rpsim.ir.action import COMPUTE_KINDS, Action
from rpsim.ir.deps import DependencyFacts, check_acyclic, dependency_facts
from rpsim.ir.grid import format_lanes
from rpsim.ir.jobs import jobs_of
from rpsim.ir.plan import CPU, LANES, Plan

LANE_KINDS = {
    "compute": set(COMPUTE_KINDS) | {"FREE", "STEP"}, "h2d": {"ACT_IN"}, "d2h": {"ACT_OUT"},
    "param_h2d": {"LOAD"}, "grad_d2h": {"OFFLOAD"}, "p2p": {"SEND"}, "p2p_recv": {"RECV"}, "optimizer": {"STEP"},
}


def fail(plan: Plan, message: str, where: tuple[int, Action] | None = None, gpus: set[int] | None = None) -> None:
    shown = gpus if gpus is not None else ({where[0]} if where else None)
    raise PlanError(f"{message}\n{format_lanes(plan, shown, where)}")


def check_plan(plan: Plan) -> DependencyFacts:
    """Run every check; returns the dependency graph by node id (rpsim.ir.deps.dependency_facts, cached on
    the plan: callers need not derive it twice; dependency_graph(plan) makes the networkx graph from it)."""
    _check_lanes(plan)
    _check_complete(plan)
    _check_split_backward(plan)
    facts = dependency_facts(plan)
    if plan.level == "pcie":
        _check_data_available(plan, facts)
        _check_weights(plan)
        _check_steps(plan)
    check_acyclic(plan)
    return facts


def _check_lanes(plan: Plan) -> None:
    for (gpu, lane), actions in plan.lanes.items():
        if lane not in LANES:
            raise PlanError(f"lane {lane!r} unknown; valid choices: {', '.join(LANES)}")
        if not (gpu == CPU or 0 <= gpu < plan.n_gpus):
            raise PlanError(f"lane ({gpu}, {lane}): GPU index out of range 0..{plan.n_gpus - 1}")
        # The host runs the optimizer lane and nothing else: a compute lane on device -1 passed here and
        # failed later with an unrelated message, and an optimizer lane on a GPU was simulated silently.
        if (gpu == CPU) != (lane == "optimizer"):
            raise PlanError(f"lane ({gpu}, {lane}): the optimizer lane lives on the host (device {CPU}) and "
                            f"every other lane on a GPU 0..{plan.n_gpus - 1}")
        # Only pcie lowering adds transfers, steps and frees; an 'ideal' or 'hop' plan holding them was
        # simulated as if they were not there.
        extra = [a for a in actions if not a.is_compute]
        if plan.level != "pcie" and extra:
            fail(plan, f"{extra[0]}: a plan at level {plan.level!r} holds compute actions only (transfers, "
                       f"steps and frees come from pcie lowering)", (gpu, extra[0]))
        for a in actions:
            if a.kind not in LANE_KINDS[lane]:
                fail(plan, f"{a} cannot run on lane {lane!r} (it takes {', '.join(sorted(LANE_KINDS[lane]))})",
                     (gpu, a))
        if len(set(actions)) < len(actions):  # counted only when some action repeats (the message's order)
            dup = [a for a, n in Counter(actions).items() if n > 1]
            fail(plan, f"{dup[0]} appears twice on gpu {gpu} lane {lane}", (gpu, dup[0]))
    compute = [a for _, a in plan.compute_actions()]
    if len(set(compute)) < len(compute):
        dup = [a for a, n in Counter(compute).items() if n > 1]
        gpus = {g for g, a in plan.compute_actions() if a == dup[0]}
        fail(plan, f"{dup[0]} runs more than once (GPUs {sorted(gpus)})", None, gpus)


def expected_compute(plan: Plan) -> set[Action]:
    """Every (stage, mb, it) once: F, and its backward as one B or as one I and one W (a plan may split
    some backwards and not others, as DualPipeV does)."""
    return {Action(*f) for f in _expected_fields(plan)}


def _expected_fields(plan: Plan) -> set[tuple]:
    """expected_compute's actions as field tuples (kind, stage, mb, it, phase, chunk, peer)."""
    p = plan.partition
    split = {(a.stage, a.mb, a.it) for _, a in plan.compute_actions() if a.kind in ("I", "W")}
    fused_last = len(p.bwd) - 1 if p.fused else None
    out: set[tuple] = set()
    for it in range(plan.n_iters):
        for m in range(plan.n_mb):
            out.update(("F", s, m, it, None, None, None) for s in range(len(p.fwd)))
            for s in range(len(p.bwd)):
                if s == fused_last:
                    out.add(("FB", s, m, it, None, None, None))
                elif (s, m, it) in split:
                    out.add(("I", s, m, it, None, None, None))
                    out.add(("W", s, m, it, None, None, None))
                else:
                    out.add(("B", s, m, it, None, None, None))
    return out


def _fields(a: Action) -> tuple:
    return (a.kind, a.stage, a.mb, a.it, a.phase, a.chunk, a.peer)


def _check_complete(plan: Plan) -> None:
    # Field tuples, not Actions: the expected set of a 64-GPU plan is 10^5 actions, and building and
    # hashing an Action each was a tenth of make_plan. Actions order as their field tuples do.
    have = {_fields(a) for _, a in plan.compute_actions()}
    want = _expected_fields(plan)
    missing, extra = sorted(want - have), sorted(have - want)
    if missing:
        first = Action(*missing[0])
        raise PlanError(f"incomplete plan: {len(missing)} compute actions missing, first {first} "
                        f"(stages x microbatches x iterations = {len(plan.partition.fwd)}F/"
                        f"{len(plan.partition.bwd)}B x {plan.n_mb} x {plan.n_iters})\n{format_lanes(plan)}")
    if extra:
        first = Action(*extra[0])
        where = next((g, a) for g, a in plan.compute_actions() if a == first)
        fail(plan, f"{first} is not part of this plan's stages, microbatches or iterations", where)


def _check_split_backward(plan: Plan) -> None:
    """W reads what its I left on the GPU (the retained graph and output gradients): same GPU, and after."""
    where: dict[tuple, tuple[int, int]] = {}
    for gpu in range(plan.n_gpus):
        for i, a in enumerate(plan.lane(gpu, "compute")):
            if a.kind in ("I", "W"):
                where[(a.kind, a.stage, a.mb, a.it)] = (gpu, i)
    for (kind, stage, mb, it), (gpu, i) in where.items():
        if kind != "W":
            continue
        g_i, pos_i = where.get(("I", stage, mb, it), (None, None))
        w = Action("W", stage, mb, it)
        if g_i != gpu:
            fail(plan, f"gpu {gpu}: {w} runs on another GPU than its I (gpu {g_i}); W needs the state I "
                       f"left on its GPU", (gpu, w))
        if pos_i is not None and pos_i > i:
            fail(plan, f"gpu {gpu}: {w} runs before its I", (gpu, w))


def _check_data_available(plan: Plan, facts: DependencyFacts) -> None:
    hops = facts.hop_edges  # found by rpsim.ir.deps while building, in edge order
    if hops:
        u, v = hops[0]
        fail(plan, f"gpu {v[0]}: {v[1]} reads data that {u[1]} produced on gpu {u[0]}, and no transfer "
                   f"moves it (lowered plans need ACT_OUT/ACT_IN or SEND/RECV)", v, {u[0], v[0]})


def _check_weights(plan: Plan) -> None:
    streamed = any(lane == "param_h2d" for (_, lane) in plan.lanes)
    if not streamed:
        return
    for gpu in range(plan.n_gpus):
        # Field tuples and positions, not Action objects and tuple.index: O(actions), not O(actions^2).
        loads = {(a.stage, a.mb, a.it, a.phase, a.chunk) for a in plan.lane(gpu, "param_h2d")}
        compute = plan.lane(gpu, "compute")
        pos: dict[Action, int] = {}
        frees: dict[tuple, int] = {}
        for i, action in enumerate(compute):
            pos.setdefault(action, i)
            if action.kind == "FREE":
                frees.setdefault((action.stage, action.mb, action.it, action.phase), i)
        for job in jobs_of(plan, gpu):
            a, b = plan.partition.ranges(job.phase)[job.stage]
            key = (job.stage, job.first_mb, job.it, job.phase)
            for layer in range(a, b):
                if (*key, layer) not in loads:
                    fail(plan, f"gpu {gpu}: {job.actions[0]} runs without layer {layer}'s weights "
                               f"(no LOAD for its job)", (gpu, job.actions[0]))
            if frees.get(key, -1) < pos[job.actions[-1]]:
                free = Action("FREE", *key)
                fail(plan, f"gpu {gpu}: the weights of the job ending at {job.actions[-1]} are never freed "
                           f"after it (expected {free})", (gpu, job.actions[-1]))


def _stepped_layers(plan: Plan, step: Action) -> range:
    """Pipeline layers one STEP updates: a GPU-resident step covers its forward stage's layers, a host
    step (phase B) the one layer in its chunk."""
    if step.chunk is not None:
        return range(step.chunk, step.chunk + 1)
    stages = plan.partition.ranges(step.phase or "F")
    if step.stage is None or not 0 <= step.stage < len(stages):
        raise PlanError(f"{step}: stage {step.stage} is not one of the plan's {len(stages)} stages")
    a, b = stages[step.stage]
    return range(a, b)


def _check_steps(plan: Plan) -> None:
    """Every parameter is stepped exactly once each iteration: a plan missing one STEP used to simulate
    and run, and only --check-grads noticed the stale layer."""
    counts: dict[int, Counter[int]] = {it: Counter() for it in range(plan.n_iters)}
    where: dict[tuple[int, int], tuple[int, Action]] = {}
    for (gpu, _lane), actions in plan.lanes.items():
        for a in actions:
            if a.kind != "STEP":
                continue
            if a.it not in counts:
                fail(plan, f"{a}: iteration {a.it} is outside the plan's {plan.n_iters}", (gpu, a))
            for layer in _stepped_layers(plan, a):
                counts[a.it][layer] += 1
                where[(a.it, layer)] = (gpu, a)
    n_layers = plan.partition.n_layers
    for it, seen in counts.items():
        missing = [layer for layer in range(n_layers) if seen[layer] == 0]
        if missing:
            raise PlanError(f"iteration {it}: no optimizer STEP updates pipeline layer(s) "
                            f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}; every "
                            f"parameter must be stepped once each iteration\n{format_lanes(plan)}")
        twice = [layer for layer in range(n_layers) if seen[layer] > 1]
        if twice:
            fail(plan, f"iteration {it}: pipeline layer {twice[0]} is stepped {seen[twice[0]]} times; every "
                       "parameter must be stepped once each iteration", where[(it, twice[0])])
