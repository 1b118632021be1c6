"""RoundPipe (Luo et al., arXiv 2604.27085, Sec. 4): stages dispatched round-robin over a pool of
stateless GPUs. Each round of M_R microbatches runs its S = S_f + S_b stage slots in order (forward
stages, then the fused last stage, then backward stages deep -> shallow); slot i goes to GPU
(g0 + i) mod N and runs all of the round's microbatches before that GPU takes its next slot. Between
rounds g0 += S (paper), or g0 = the GPU that frees earliest (the authors' simulator). Iterations follow
each other without a flush; the optimizer runs asynchronously with staleness 1. roundpipe_sync shares
build_plan with a synchronous optimizer; the mode is the builder's, never BuildOptions.optimizer.
"""
from __future__ import annotations

import math
from dataclasses import replace

from rpsim.ir import Action, Partition, Plan
from rpsim.schedules.base import BuildOptions, compute_plan, require
from rpsim.schedules.traits import ROUND_ROBIN, ROUNDPIPE_PARTITIONERS, ScheduleTraits

NAME = "roundpipe"
DESCRIPTION = "RoundPipe: round-robin stage dispatch over stateless GPUs, weights in host memory, async optimizer"
G0_RULES = ("paper", "earliest-free")

Job = tuple[str, int, tuple[int, ...], int]  # (kind, stage, microbatches, iteration)


def round_slots(partition: Partition) -> list[tuple[str, int]]:
    """The S stage slots of one round: forward stages, then backward stages from the deepest."""
    slots = [("F", s) for s in range(len(partition.fwd))]
    deepest = len(partition.bwd) - 1
    slots.append(("FB" if partition.fused else "B", deepest))
    slots += [("B", s) for s in range(deepest - 1, -1, -1)]
    return slots


def round_sizes(n_mb: int, n_gpus: int, round_size: int | None = None) -> list[int]:
    """Microbatches per round. Given a size: rounds of it, the last one holds the rest. By default
    max(1, M // N) rounds as even as possible, larger first, so every round has M_R >= N microbatches
    when M >= N (roundpipe.md) instead of a short last round idling GPUs."""
    if round_size:
        return [min(round_size, n_mb - start) for start in range(0, n_mb, round_size)]
    n_rounds = max(1, n_mb // n_gpus)
    base, extra = divmod(n_mb, n_rounds)
    return [base + 1] * extra + [base] * (n_rounds - extra)


def dispatch_jobs(n_mb: int, partition: Partition, options: BuildOptions, sizes: list[int]) -> list[list[Job]]:
    """Rounds (each a list of jobs in slot order) over all iterations."""
    rounds = []
    for it in range(options.n_iters):
        start = 0
        for size in sizes:
            mbs = tuple(range(start, start + size))
            start += size
            rounds.append([(kind, stage, mbs, it) for kind, stage in round_slots(partition)])
    return rounds


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    return build_plan(NAME, "async", n_gpus, partition, n_mb, options)


def build_plan(name: str, optimizer: str, n_gpus: int, partition: Partition, n_mb: int,
               options: BuildOptions) -> Plan:
    """The lanes of both RoundPipe variants. The optimizer mode belongs to the schedule, not to options:
    read from BuildOptions.optimizer (default 'sync'), `roundpipe` built directly was roundpipe-sync."""
    options = replace(options, optimizer=optimizer)
    require(n_gpus >= 1, f"n_gpus must be >= 1, got {n_gpus}")
    require(n_mb >= 1, f"n_mb must be >= 1, got {n_mb}")
    require(options.g0_rule in G0_RULES, f"g0_rule {options.g0_rule!r} unknown; valid choices: {', '.join(G0_RULES)}")
    require(options.round_size is None or options.round_size >= 1,
            f"round_size must be >= 1, got {options.round_size}")
    sizes = round_sizes(n_mb, n_gpus, options.round_size)
    rounds = dispatch_jobs(n_mb, partition, options, sizes)
    if options.g0_rule == "earliest-free":
        require(options.fwd_stage_s is not None and options.bwd_stage_s is not None,
                "g0_rule 'earliest-free' needs per-stage time estimates (fwd_stage_s, bwd_stage_s)")
        # One estimate per stage: a short list raised IndexError, and _ready_s takes len(fwd_stage_s)
        # as the number of forward stages, so a long one silently misplaced the fused stage's input.
        n_f, n_b = len(options.fwd_stage_s), len(options.bwd_stage_s)  # type: ignore[arg-type]
        require((n_f, n_b) == (len(partition.fwd), len(partition.bwd)),
                f"g0_rule 'earliest-free': fwd_stage_s / bwd_stage_s have {n_f} / {n_b} entries; the partition "
                f"has {len(partition.fwd)} forward / {len(partition.bwd)} backward stages")
        assignment = assign_earliest_free(rounds, n_gpus, options)
    else:
        assignment = assign_round_robin(rounds, n_gpus)
    per_gpu: list[list[Action]] = [[] for _ in range(n_gpus)]
    for job_round, gpus in zip(rounds, assignment, strict=True):
        for (kind, stage, mbs, it), g in zip(job_round, gpus, strict=True):
            if kind == "B" and options.defer_w:
                per_gpu[g] += deferred_w_order(stage, mbs, it)
            else:
                per_gpu[g] += [Action(kind, stage, m, it) for m in mbs]
    return compute_plan(name, n_gpus, n_mb, partition, per_gpu, options,
                        extra={"round_sizes": sizes, "g0_rule": options.g0_rule, "defer_w": options.defer_w})


W_LAG = 1  # microbatches a job's W passes trail its I passes


def deferred_w_order(stage: int, mbs: tuple[int, ...], it: int) -> list[Action]:
    """A backward job split into I and W: each microbatch's W runs after the next microbatch's I, so it
    fills the wait for that I's input (the gradient from the stage above arrives at the pace of the
    slowest stage), and the gradient for the stage below leaves after I alone (Qi et al. 2024's idea,
    inside one RoundPipe job). The job still ends with its last W, before the GPU's next job."""
    out: list[Action] = []
    for k, m in enumerate(mbs):
        out.append(Action("I", stage, m, it))
        if k >= W_LAG:
            out.append(Action("W", stage, mbs[k - W_LAG], it))
    return out + [Action("W", stage, m, it) for m in mbs[max(0, len(mbs) - W_LAG):]]


def assign_round_robin(rounds: list[list[Job]], n_gpus: int) -> list[list[int]]:
    """Paper rule: one global counter, g0 <- (g0 + S) mod N between rounds."""
    counter, out = 0, []
    for jobs in rounds:
        out.append([(counter + i) % n_gpus for i in range(len(jobs))])
        counter += len(jobs)
    return out


def assign_earliest_free(rounds: list[list[Job]], n_gpus: int, options: BuildOptions) -> list[list[int]]:
    """Authors' simulator: each round starts on the GPU that frees earliest (ties -> lowest index),
    estimated by list-scheduling the jobs with the given stage times and a fixed per-hop delay."""
    free_s = [0.0] * n_gpus
    done: dict[tuple[str, int, int, int], tuple[float, int]] = {}  # (phase, stage, mb, it) -> (end, gpu)
    out = []
    for jobs in rounds:
        g0 = min(range(n_gpus), key=lambda g: (free_s[g], g))
        gpus = [(g0 + i) % n_gpus for i in range(len(jobs))]
        for (kind, stage, mbs, it), g in zip(jobs, gpus, strict=True):
            for m in mbs:
                ready = _ready_s(kind, stage, m, it, g, done, options)
                start = max(free_s[g], ready)
                dur = options.fwd_stage_s[stage] if kind == "F" else options.bwd_stage_s[stage]  # type: ignore[index]
                free_s[g] = start + dur
                done[("F" if kind == "F" else "B", stage, m, it)] = (free_s[g], g)
        out.append(gpus)
    return out


def _ready_s(kind: str, stage: int, m: int, it: int, g: int,
             done: dict[tuple[str, int, int, int], tuple[float, int]], options: BuildOptions) -> float:
    if kind == "F":
        dep = done.get(("F", stage - 1, m, it)) if stage > 0 else None
    elif kind == "FB":
        n_fwd = len(options.fwd_stage_s or ())
        dep = done.get(("F", n_fwd - 1, m, it)) if n_fwd else None
    else:
        dep = done.get(("B", stage + 1, m, it))
    if dep is None:
        return 0.0
    end, dep_gpu = dep
    return end + (options.hop_s if dep_gpu != g else 0.0)


ROTATION_JOBS = 4  # jobs per GPU and iteration from which a one-job imbalance no longer matters much


def dispatch_period(n_gpus: int, rounds: int, slots: int) -> int:
    """Iterations after which the dispatch repeats on the same GPUs (job k runs on GPU k mod N, an
    iteration has rounds x slots jobs), for plans with fewer than ROTATION_JOBS jobs per GPU and iteration;
    1 when every iteration already puts the same work on every GPU (or enough jobs even it out). A steady
    iteration time is a mean over one period (rpsim.metrics.summary)."""
    jobs = rounds * slots
    period = n_gpus // math.gcd(jobs, n_gpus)
    return 1 if jobs >= ROTATION_JOBS * n_gpus else period


def steady_period(n_gpus: int, n_mb: int, slots: int, round_size: int | None) -> int:
    """dispatch_period for this microbatching (the planner sizes a plan's iterations by it)."""
    return dispatch_period(n_gpus, len(round_sizes(n_mb, n_gpus, round_size)), slots)


def plan_steady_period(plan: Plan) -> int:
    """dispatch_period of a built plan, from the rounds and stage slots it holds."""
    rounds = len(plan.options.get("round_sizes") or [plan.n_mb])
    return dispatch_period(plan.n_gpus, rounds, len(plan.partition.fwd) + len(plan.partition.bwd))


TRAITS = ScheduleTraits(placement=ROUND_ROBIN, optimizer="async", fast_estimate="round-robin",
                        partitioners=ROUNDPIPE_PARTITIONERS, partition_sweep=True, search_reference=True,
                        steady_period=steady_period, plan_steady_period=plan_steady_period, deferrable_w=True)
