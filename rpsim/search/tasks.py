"""The search's units of work, as plain functions of picklable inputs (for process pools and Dask): fast
estimates of a chunk of candidates, a partition local search from one seed, and a full simulation of
one candidate. Each process keeps one Workspace per search (keyed by a token), so scenario variants,
contexts and partitions are built once per process, not once per task."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rpsim.compare import infeasible_row
from rpsim.errors import Infeasible, SpecError
from rpsim.partition.counts import partition_to_spec
from rpsim.partition.local_search import local_search
from rpsim.scenario import Scenario
from rpsim.search.fast_eval import Estimate, is_async
from rpsim.search.fast_roundpipe import slots_of, work_bound_s
from rpsim.search.space import LOCAL, Candidate, plan_request
from rpsim.search.task_gc import plan_task
from rpsim.search.workspace import Workspace
from rpsim.steady_run import simulate_request

# Per process: the workspaces of the searches it serves (a process pool serves one search; a Dask
# worker may serve several). A cache, not shared state: every entry is a pure function of its key.
_WORKSPACES: dict[str, Workspace] = {}
_MAX_WORKSPACES = 4


def install(token: str, base: Scenario) -> None:
    """Process-pool initializer: the base scenario arrives once per process, not once per task."""
    workspace(token, base)


def workspace(token: str, base: Scenario | None = None) -> Workspace:
    if token not in _WORKSPACES:
        if base is None:
            raise RuntimeError(f"search {token}: this worker holds no scenario (initializer not run)")
        if len(_WORKSPACES) >= _MAX_WORKSPACES:
            _WORKSPACES.pop(next(iter(_WORKSPACES)))
        _WORKSPACES[token] = Workspace(base)
    return _WORKSPACES[token]


@dataclass(frozen=True)
class Scored:
    candidate: Candidate  # with its partition written out whenever its partitioner found one
    estimate: Estimate | None  # None: the partitioner found no partition (reason says why)
    reason: str = ""

    @property
    def feasible(self) -> bool:
        return self.estimate is not None and self.estimate.feasible


def score(ws: Workspace, c: Candidate) -> Scored:
    try:
        resolved = ws.resolve(c)
        return Scored(resolved, ws.estimate(resolved, ws.partition(resolved)))
    except (Infeasible, SpecError) as e:
        return Scored(c, None, str(e))


def fast_chunk(token: str, base: Scenario | None, chunk: list[Candidate]) -> list[Scored]:
    ws = workspace(token, base)
    return [score(ws, c) for c in chunk]


def refine(token: str, base: Scenario | None, seed: Candidate, max_evaluations: int, order_seed: int
           ) -> tuple[Scored, int]:
    """Local search from a seed's partition under the fast estimate; (the best found, evaluations)."""
    ws = workspace(token, base)

    def evaluate(p: Any) -> float:
        e = ws.estimate(seed, p)
        return e.iteration_s if e.feasible else float("inf")

    start = ws.partition(seed)
    result = local_search(start, evaluate, max_evaluations, order_seed)
    if result.partition == start:  # nothing better nearby: keep the seed's own name
        return score(ws, seed), result.evaluations
    found = replace(seed, partitioner=LOCAL, partition=partition_to_spec(result.partition))
    return score(ws, found), result.evaluations


@dataclass(frozen=True)
class Confirmed:
    candidate: Candidate  # partition written out: plan_request(candidate) rebuilds the same plan
    metrics: dict[str, Any]  # rpsim.metrics.summary's result (or compare's infeasible row)
    estimate: Estimate | None
    work_bound_s: float  # the iteration's compute shared evenly over the GPUs: no steady state beats it

    @property
    def feasible(self) -> bool:
        return bool(self.metrics["feasible"])

    @property
    def below_work_bound(self) -> bool:
        """A steady state measured faster than physically possible: the few simulated iterations of an
        async plan caught the rotation of its jobs over the GPUs at a favourable phase."""
        it = self.metrics["iteration_s"]
        return it is not None and it < (1 - 1e-3) * self.work_bound_s

    @property
    def ranked_tokens_per_s(self) -> float:
        """What the ranking uses: the simulated tokens/s, or, for a steady state measured below the work
        bound, the tokens/s at the bound (no real steady state beats it). 0 when it does not fit."""
        m = self.metrics
        if not self.feasible or not m["iteration_s"]:
            return 0.0
        return m["tokens_per_s"] * m["iteration_s"] / max(m["iteration_s"], self.work_bound_s)


def confirm(token: str, base: Scenario | None, c: Candidate, fidelity: str = "pcie",
            estimate: Estimate | None = None) -> Confirmed:
    """make_plan + simulate: the full pcie-level result the ranking uses. `estimate`: the fast stage's
    estimate of this very candidate (partition written out, same iterations), which the result carries
    instead of estimating again (a list-timed estimate builds and times the whole plan once more)."""
    with plan_task():  # rpsim.search.task_gc: a plan's objects are not rescanned as they grow
        return _confirm(workspace(token, base), c, fidelity, estimate)


def _confirm(ws: Workspace, c: Candidate, fidelity: str, estimate: Estimate | None) -> Confirmed:
    sc = ws.scenario(c.mb_size, c.recompute)
    try:
        result = simulate_request(sc, plan_request(c, fidelity))
    except (Infeasible, SpecError) as e:
        return Confirmed(c, infeasible_row(c.schedule, sc, str(e)), None, 0.0)
    plan, metrics = result.plan, result.metrics
    resolved = replace(c, partition=partition_to_spec(plan.partition))
    bound = 0.0
    if c.roundpipe and is_async(c.schedule):
        bound = work_bound_s(ws.context(c.mb_size, c.recompute), slots_of(ws.context(c.mb_size, c.recompute),
                                                                            plan.partition))
    if estimate is None or resolved != c:
        estimate = ws.estimate(resolved, plan.partition)
    return Confirmed(resolved, metrics, estimate, bound)
