"""From a scenario and a schedule name to a lowered plan: choose the partition, build, lower, check.
The one path every command (compare, simulate, export, search) takes."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from rpsim.errors import SpecError
from rpsim.gc_pause import gc_paused
from rpsim.ir import Action, Partition, Plan
from rpsim.ir.validate import check_plan
from rpsim.ir.weight_deps import GRAD_FENCES, UNSET_GRAD_FENCE
from rpsim.partition import (
    LayerTimes,
    balanced_counts,
    baseline_uneven_counts,
    even_counts,
    fixed_partition,
    library_timed_partition,
    parse_partition_spec,
    roundpipe_auto,
)
from rpsim.partition.library_auto import MODEL_MEMORY_SHARE
from rpsim.passes import LoweringContext, lower
from rpsim.scenario import Scenario
from rpsim.schedules import get_schedule
from rpsim.schedules import roundpipe as roundpipe_schedule  # the library's schedule, by its builder's NAME
from rpsim.schedules.base import BuildOptions, compute_plan
from rpsim.schedules.traits import FIXED_PARTITIONERS, ROUNDPIPE_PARTITIONERS, ScheduleTraits
from rpsim.sim.steady import FIRST_SPAN

__all__ = ["FIXED_PARTITIONERS", "ROUNDPIPE_PARTITIONERS", "PlanRequest", "check_counts", "make_plan",
           "make_plan_prefix", "roundpipe_library_request"]


def async_iterations(period: int) -> int:
    """Iterations an async plan simulates by default: the warm-up, the dispatch's period of spans plus one
    more, and one drain iteration, measured around, not over. Two spans that agree already show a
    steady state of one span (rpsim.metrics.summary.steady_cycle), the common case; a longer cycle, or
    spans still moving, make rpsim.steady_run simulate again with twice the iterations. Two warm-up
    iterations are not always enough: where the host optimizer is the bottleneck its queue fills over 3
    or more iterations (e03's 0.7B RoundPipe on one H200: spans 0.896, 0.901, then 1.125 s from
    iteration 3 on)."""
    return FIRST_SPAN + period + 2


@dataclass(frozen=True)
class PlanRequest:
    schedule: str
    fidelity: str = "pcie"
    partition: str | None = None  # --partition spec; None = the schedule's partitioner
    partitioner: str | None = None
    virtual_stages: int | None = None
    round_size: int | None = None
    g0_rule: str = "paper"
    n_iters: int | None = None
    weights: str = "auto"
    # What waits for a layer's previous CPU step before its gradient is produced again (rpsim.ir.deps):
    # "none" (rpexec's default: each download takes a host buffer of its own, so nothing waits and the
    # backlog behind the optimizer sits in host memory); "offload" (rpexec before session 8: the
    # download waits for the previous STEP, and the GPU holds the gradient meanwhile, so its peak
    # follows the host optimizer's timing); or "backward" (the roundpipe library: downloads never wait,
    # a backward job starts only after its layers' previous gradient copy, LayerAttribute.backward_fence).
    grad_fence: str = "none"
    defer_w: bool = False  # RoundPipe: split backward, W passes after each job's I passes


def roundpipe_library_request(n_mb: int) -> PlanRequest:
    """RoundPipe as the `roundpipe` library (0.1.1) runs it: its own partitioner; a backward job starts
    after its layers' previous gradient copy (grad_fence "backward"); and one round per call: roundpipe.py
    launches each layer group once per call on the next device with the call's whole batch, so a stage
    runs all n_mb microbatches, where the paper's rounds hold N (one per GPU). With rounds of N, the
    benchmark's 2.8B model on 2 H200s was predicted 22-24% slower than the library measured: every job
    switch of the 28 one-layer backward stages left the GPU waiting for the next stage's first input."""
    return PlanRequest(roundpipe_schedule.NAME, partitioner="roundpipe-library", grad_fence="backward",
                       round_size=n_mb)


def default_virtual_stages(n_gpus: int, n_layers: int) -> int:
    return 2 if 2 * n_gpus <= n_layers else 1


def layer_times(sc: Scenario) -> LayerTimes:
    c = sc.costs.layers
    # The partitioner's cap (half the memory limit, the other half prefetches the next stage) bounds a
    # stage's parameter-sized buffers, as the paper's and library's partitioner does (roundpipe.md):
    # weights, plus the gradient buffers a backward stage holds. Counting activations under it too made
    # the LM head alone (fp32 logits of 8192 tokens x 152k vocab, ~7 GiB) exceed 7.2 GiB on a 4090, so
    # Qwen3-1.7B and 32B -- both run by the paper on 4090s -- had no feasible RoundPipe partition.
    # Activations live in the rest of GPU memory, which the simulator tracks exactly.
    return LayerTimes(forward_s=[x.forward_s for x in c], backward_s=[x.backward_s for x in c],
                      recompute_s=[x.recompute_s for x in c], fwd_bytes=[x.weight_bytes for x in c],
                      bwd_bytes=[x.weight_bytes + x.grad_bytes for x in c])


def choose_partition(sc: Scenario, req: PlanRequest, roundpipe: bool, n_stages: int,
                     declared: tuple[str, ...]) -> Partition:
    """`declared`: the partitioners the builder takes (its traits; the first is its default)."""
    n_layers = sc.model.n_layers
    if req.partition:
        return parse_partition_spec(req.partition, n_layers, roundpipe)
    name = req.partitioner or declared[0]
    if name not in declared:
        raise SpecError(f"--partitioner {name!r} does not apply to schedule {req.schedule!r}; valid choices: "
                        f"{', '.join(declared)}")
    if roundpipe:
        limit = MODEL_MEMORY_SHARE * sc.server.gpu.memory_bytes  # the library's default limit
        if name == "roundpipe-library":
            return library_timed_partition(layer_times(sc), sc.server.n_gpus, limit)
        return roundpipe_auto(layer_times(sc), sc.server.n_gpus, sc.training.n_mb, limit)
    per_layer = [x.forward_s + x.backward_s + (x.recompute_s if sc.training.recompute != "none" else 0)
                 for x in sc.costs.layers]
    if name == "uneven":
        counts = baseline_uneven_counts(per_layer, n_stages)
    elif name == "balanced":
        counts = balanced_counts(per_layer, n_stages)
    elif name == "even":
        counts = even_counts(n_layers, n_stages)
    else:
        raise AssertionError(f"{req.schedule} declares partitioner {name!r}, which the planner lacks")
    return fixed_partition(counts, n_layers)


def check_counts(virtual_stages: int | None, n_iters: int | None, round_size: int | None) -> None:
    """A count below 1 is refused, not replaced by the default (`--iters 0` used to become 1)."""
    for flag, value in (("--virtual-stages", virtual_stages), ("--iters", n_iters), ("--round-size", round_size)):
        if value is not None and value < 1:
            raise SpecError(f"{flag} {value}: must be >= 1")


def make_plan(sc: Scenario, req: PlanRequest) -> Plan:
    """The request's plan, built, lowered and checked, with the cyclic garbage collector paused meanwhile
    (rpsim.gc_pause: building allocates ~10^5-10^6 long-lived acyclic objects; no result depends on it)."""
    return make_plan_prefix(sc, req, None)[0]


def make_plan_prefix(sc: Scenario, req: PlanRequest, at_most_iters: int | None) -> tuple[Plan, int]:
    """(the request's plan built for its first `at_most_iters` iterations only, the iterations its whole
    plan holds). Every builder and pass places an iteration's actions after the earlier iterations' in
    each lane, and no action waits on a later iteration's, so the plan of the first k iterations is the
    whole plan cut to them (rpsim.sim.steady.first_iterations; tests/test_plan_prefix.py): a run that
    needs only those (rpsim.steady_run) need not pay for building, lowering and checking the rest.
    None: every iteration (make_plan)."""
    with gc_paused():
        return _make_plan(sc, req, at_most_iters)


def _make_plan(sc: Scenario, req: PlanRequest, at_most_iters: int | None) -> tuple[Plan, int]:
    module = get_schedule(req.schedule)
    traits: ScheduleTraits = module.TRAITS
    n = sc.server.n_gpus
    check_counts(req.virtual_stages, req.n_iters, req.round_size)
    if req.defer_w and not traits.deferrable_w:
        from rpsim.schedules import SCHEDULES
        valid = [name for name, m in SCHEDULES.items() if m.TRAITS.deferrable_w]
        raise SpecError(f"--defer-w: schedule {req.schedule!r} does not take it; valid choices: {', '.join(valid)}")
    roundpipe = traits.asymmetric_partition
    v = traits.virtual_stages.resolve(req.virtual_stages, default_virtual_stages(n, sc.model.n_layers))
    partition = choose_partition(sc, req, roundpipe, n * v, traits.partitioners)
    planned_iters = req.n_iters or default_iterations(sc, req, traits, partition)
    options = BuildOptions(virtual_stages=v, round_size=req.round_size, g0_rule=req.g0_rule,
                           n_iters=min(planned_iters, at_most_iters or planned_iters),
                           optimizer=traits.optimizer, recompute=sc.training.recompute,
                           defer_w=req.defer_w)
    if req.g0_rule == "earliest-free":
        options = replace(options, **stage_estimates(sc, partition))
    return lower_checked(sc, req, module.build(n, partition, sc.training.n_mb, options)), planned_iters


def lower_checked(sc: Scenario, req: PlanRequest, plan: Plan) -> Plan:
    """A builder's compute plan, with the scenario's setup, lowered for the request's fidelity and checked."""
    plan = replace(plan, setup=sc.to_setup())
    if req.grad_fence not in GRAD_FENCES:
        raise SpecError(f"grad_fence {req.grad_fence!r} unknown; valid choices: {', '.join(GRAD_FENCES)}")
    if req.grad_fence != UNSET_GRAD_FENCE:  # what a plan without the option means (rpsim.ir.weight_deps)
        plan = replace(plan, options={**plan.options, "grad_fence": req.grad_fence})
    lowered = lower(plan, req.fidelity, LoweringContext(sc.costs, sc.server, req.weights))
    check_plan(lowered)
    return lowered


def make_plan_from_order(sc: Scenario, req: PlanRequest, per_gpu: Sequence[Sequence[Action]],
                         overlapped: Sequence[tuple[int, str, str]] = (), name: str = "torch-csv") -> Plan:
    """A plan from a given compute order (one iteration, e.g. a torch schedule CSV): one row per GPU, each
    stage on the GPU(s) its row puts it, the partition from the request (or the fixed partitioner over
    as many stages as the order names), then lowered and checked like any builder's plan."""
    n = sc.server.n_gpus
    if len(per_gpu) != n:
        raise SpecError(f"{name}: the order has {len(per_gpu)} rows (ranks); --gpus {sc.server.name!r} has {n} GPUs")
    n_stages = 1 + max((a.stage for row in per_gpu for a in row), default=-1)  # type: ignore[type-var]
    n_mb = 1 + max((a.mb for row in per_gpu for a in row), default=-1)  # type: ignore[type-var]
    if n_mb != sc.training.n_mb:
        raise SpecError(f"{name}: the order runs {n_mb} microbatches; the training setup has n_mb = "
                        f"{sc.training.n_mb} (set --n-mb {n_mb}, or --global-batch / --mb-size to match)")
    partition = choose_partition(sc, req, False, n_stages, FIXED_PARTITIONERS)  # stages bound to rows
    options = BuildOptions(virtual_stages=max(1, n_stages // n), n_iters=1, recompute=sc.training.recompute)
    plan = compute_plan(name, n, n_mb, partition, per_gpu, options,
                        extra={"virtual_stages": max(1, n_stages // n), "overlapped": [list(p) for p in overlapped]})
    return lower_checked(sc, req, plan)


def default_iterations(sc: Scenario, req: PlanRequest, traits: ScheduleTraits, p: Partition) -> int:
    """Sync plans flush: one iteration. Async ones need a steady state (async_iterations), over the
    dispatch's period when iterations load the GPUs differently."""
    if traits.optimizer == "sync":
        return 1
    period = traits.steady_period(sc.server.n_gpus, sc.training.n_mb, len(p.fwd) + len(p.bwd),
                                  req.round_size) if traits.steady_period else 1
    return async_iterations(period)


def stage_estimates(sc: Scenario, p: Partition) -> dict[str, object]:
    from rpsim.partition.roundpipe_auto import stage_times
    fwd, bwd = stage_times(p, layer_times(sc))
    return {"fwd_stage_s": tuple(fwd), "bwd_stage_s": tuple(bwd),
            "hop_s": sc.profile.hop_s if sc.profile and sc.profile.hop_s else 0.0}
