"""Stage jobs: the stretches of a GPU's compute lane that share one set of loaded weights.

One rule, used by the lowering passes (where to put LOAD / FREE / OFFLOAD) and by the dependency
graph (which LOAD a compute action waits for): with a symmetric partition whose every stage lives on
one GPU (GPipe, 1F1B, interleaved, looped BFS), a job is all of a stage's actions in one iteration on
its GPU; otherwise (RoundPipe) a job is a maximal run of consecutive actions of one stage, phase and
iteration.
"""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.ir.action import Action
from rpsim.ir.plan import Plan


@dataclass(frozen=True)
class Job:
    gpu: int
    phase: str  # the partition the stage indexes: F or B
    stage: int
    it: int
    first_mb: int
    actions: tuple[Action, ...]  # compute actions, in lane order

    @property
    def key(self) -> tuple[str, int, int, int]:
        return (self.phase, self.stage, self.first_mb, self.it)


RESIDENCIES = ("resident", "streamed", "stateless")


def residency(plan: Plan) -> str:
    """The plan's residency field, or where it is "" (a builder's compute plan, or a plan.json written
    before the field) what the plan's structure says: "stateless" unless every stage is bound to one
    GPU, then "streamed" if options.weights says so (older plan files), else "resident"."""
    if plan.residency:
        return plan.residency
    if not stages_bound_to_gpus(plan):
        return "stateless"
    return "streamed" if plan.options.get("weights") == "streamed" else "resident"


def stages_are_resident(plan: Plan) -> bool:
    """True when each stage has a home GPU (weights resident there or streamed to it), not stateless."""
    return residency(plan) != "stateless"


def stages_bound_to_gpus(plan: Plan) -> bool:
    """True when the partition is symmetric and each stage's actions all run on one GPU."""
    if not plan.partition.symmetric:
        return False
    home: dict[int, int] = {}
    for gpu, a in plan.compute_actions():
        if home.setdefault(a.stage, gpu) != gpu:  # type: ignore[arg-type]
            return False
    return True


def jobs_of(plan: Plan, gpu: int) -> list[Job]:
    """The GPU's jobs in lane order. Derived once per Plan object and GPU (lowering, the dependency graph,
    the checks and the memory pass all ask); a Plan is frozen, so they cannot go stale. Callers must not
    modify the list."""
    cache = plan.__dict__.get(JOBS_CACHE_KEY)
    if cache is None:
        cache = {}
        object.__setattr__(plan, JOBS_CACHE_KEY, cache)  # a cache, not a field: equality and replace() ignore it
    jobs = cache.get(gpu)
    if jobs is None:
        jobs = cache[gpu] = _derive_jobs(plan, gpu)
    return jobs


JOBS_CACHE_KEY = "_jobs"


def _derive_jobs(plan: Plan, gpu: int) -> list[Job]:
    actions = [a for a in plan.lane(gpu, "compute") if a.is_compute]
    if stages_are_resident(plan):
        groups: dict[tuple[int, int], list[Action]] = {}
        for a in actions:
            groups.setdefault((a.stage, a.it), []).append(a)  # type: ignore[arg-type]
        return [Job(gpu, "F", s, it, acts[0].mb, tuple(acts))  # type: ignore[arg-type]
                for (s, it), acts in groups.items()]
    jobs: list[Job] = []
    run: list[Action] = []
    for a in actions:
        if run and (a.partition_phase, a.stage, a.it) != (run[0].partition_phase, run[0].stage, run[0].it):
            jobs.append(_job(gpu, run))
            run = []
        run.append(a)
    if run:
        jobs.append(_job(gpu, run))
    return jobs


def _job(gpu: int, run: list[Action]) -> Job:
    a = run[0]
    return Job(gpu, a.partition_phase, a.stage, a.it, a.mb, tuple(run))  # type: ignore[arg-type]


def job_of_action(plan: Plan) -> dict[tuple[int, Action], Job]:
    out: dict[tuple[int, Action], Job] = {}
    for gpu in range(plan.n_gpus):
        for job in jobs_of(plan, gpu):
            for a in job.actions:
                out[(gpu, a)] = job
    return out
