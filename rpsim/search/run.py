"""`search(scenario, options)`: enumerate candidate plans, estimate them with the fast evaluator, refine
the best partitions by local search, then list-time the candidates no analytic estimate models but for
those whose lower bounds prove they could not be confirmed (rpsim.search.prune), confirm the top k (and
RoundPipe's default plan, the reference) with the full simulator, and rank: highest tokens/s within
memory, less peak GPU memory breaking ties.

Deterministic: the same scenario, options and seed give the same ranking on any number of workers
(every task is a pure function; results are gathered in submission order and sorted by total keys)."""
from __future__ import annotations

import hashlib
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rpsim.errors import Infeasible, SpecError
from rpsim.scenario import Scenario
from rpsim.schedules import SCHEDULES
from rpsim.search import tasks
from rpsim.search.fast_bound import lower_bound
from rpsim.search.fast_eval import has_fast_estimate
from rpsim.search.options import SearchOptions
from rpsim.search.parallel import make_runner
from rpsim.search.pareto import frontier
from rpsim.search.prune import CHEAP_FIRST_RTOL, Bounded
from rpsim.search.prune import skipped as prune_skipped
from rpsim.search.space import Candidate, enumerate_candidates
from rpsim.search.tasks import Confirmed, Scored
from rpsim.search.workspace import Workspace

FAST_CHUNK = 48  # candidates per fast task: amortises pickling, small enough to balance two cores
Progress = Callable[[str, int, int], None]  # (stage, advance by, stage total)
DEFAULT_OPTIONS = SearchOptions()


@dataclass(frozen=True)
class SearchResult:
    ranked: tuple[Confirmed, ...]  # every confirmed plan, best first
    reference: Confirmed | None  # RoundPipe's own partitioner, default request (None: no roundpipe builder)
    frontier: tuple[Confirmed, ...]  # confirmed, feasible: tokens/s against peak GPU memory
    n_candidates: int  # structured candidates enumerated
    n_fast: int  # fast-evaluator calls (structured + local-search moves)
    n_fast_feasible: int
    n_full: int  # full simulations
    stage_s: dict[str, float] = field(default_factory=dict)
    scored: tuple[Scored, ...] = ()  # the fast stage's results (for diagnosis when nothing fits)
    # list-timed candidates not estimated, and why: they could not have been confirmed (rpsim.search.prune)
    skipped: tuple[tuple[Candidate, str], ...] = ()

    @property
    def best(self) -> Confirmed | None:
        return self.ranked[0] if self.ranked and self.ranked[0].feasible else None


def token_of(sc: Scenario, options: SearchOptions) -> str:
    return hashlib.sha256(pickle.dumps((sc, options.fidelity))).hexdigest()[:16]


def plan_key(c: Candidate) -> tuple:
    """Two candidates with the same key build the same plan (partitioner names and iterations aside)."""
    return (c.schedule, c.mb_size, c.recompute, c.virtual_stages, c.round_size, c.partition, c.defer_w)


def tie(tokens_per_s: float) -> float:
    """Throughputs within 0.01% count as a tie (broken by less peak GPU memory)."""
    return float(f"{tokens_per_s:.5g}")


def estimate_key(s: Scored) -> tuple:
    e = s.estimate
    assert e is not None
    return (-tie(e.tokens_per_s), e.peak_gpu_bytes, s.candidate.sort_key)


def confirmed_key(c: Confirmed) -> tuple:
    m = c.metrics
    mem = max(m["peak_gpu_mem_bytes"]) if m["peak_gpu_mem_bytes"] else float("inf")
    return (not c.feasible, -tie(c.ranked_tokens_per_s), mem, c.candidate.sort_key)


def reference_candidate(sc: Scenario) -> Candidate | None:
    """RoundPipe's own partitioner with the default request, on the user's training setup."""
    name = next((n for n, m in SCHEDULES.items() if m.TRAITS.search_reference), None)
    if name is None:
        return None
    t = sc.training
    return Candidate(name, t.mb_size, t.recompute, SCHEDULES[name].TRAITS.partitioners[0])


def search(sc: Scenario, options: SearchOptions = DEFAULT_OPTIONS, progress: Progress | None = None
           ) -> SearchResult:
    report = progress or (lambda _stage, _n, _total: None)
    token = token_of(sc, options)
    runner = make_runner(token, sc, options.jobs, options.cluster)
    clock: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        structured = enumerate_candidates(sc, options.schedules, options.mb_sizes)
        # Candidates the list timer estimates (split backwards on fixed stages, V shapes) are few and all
        # kept; the budget samples the analytically estimated ones, as before they existed.
        estimated = [c for c in structured if analytic(c)]
        if len(estimated) > options.budget:  # a sample, leaving a quarter of the budget to local search
            keep = options.budget - options.budget // 4
            sample = random.Random(options.seed).sample(estimated, keep)
            structured = sorted(sample + [c for c in structured if not analytic(c)], key=lambda c: c.sort_key)
        quick = [c for c in structured if analytic(c)]
        scored = _fast_stage(runner, quick, report, len(structured))
        clock["fast"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        refined, n_moves = _refine_stage(runner, scored, options.budget - len(structured), options, report)
        clock["local_search"] = time.perf_counter() - t0
        # The list-timed candidates last: the analytic and local-search estimates decide which of them
        # could still be confirmed (rpsim.search.prune); only those are built and timed.
        t0 = time.perf_counter()
        timed, skipped = _list_stage(runner, sc, [c for c in structured if not analytic(c)],
                                     scored + refined, options, report, len(structured))
        clock["fast"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        pool = scored + timed + refined
        confirmed, reference = _full_stage(runner, sc, pool, options, report)
        if options.diagnose and not any(c.feasible for c in confirmed):
            if skipped:  # the nearest miss is sought among every estimate: the skipped ones too
                pool += _fast_stage(runner, list(skipped), report, len(skipped))
                skipped = {}
            confirmed += _nearest_miss(runner, pool, confirmed, options, report)
        clock["full"] = time.perf_counter() - t0
    except BaseException:  # Ctrl-C, SIGTERM or an error: stop the workers now, not after their tasks
        runner.abort()
        raise
    runner.close()
    ranked = sorted(confirmed, key=confirmed_key)
    ok = [c for c in ranked if c.feasible]
    front = frontier(ok, lambda c: c.ranked_tokens_per_s, lambda c: max(c.metrics["peak_gpu_mem_bytes"]))
    n_fast = len(structured) - len(skipped) + n_moves
    return SearchResult(tuple(ranked), reference, tuple(front), len(structured), n_fast,
                        sum(s.feasible for s in pool), len(confirmed), clock, tuple(scored + timed),
                        tuple(sorted(skipped.items(), key=lambda x: x[0].sort_key)))


def _fast_stage(runner: Any, cands: list[Candidate], report: Progress, total: int) -> list[Scored]:
    """Every candidate's estimate, in the order given. Those the list timer estimates (a lowered plan
    each, ~0.1-10 s) go first, one per task, the largest first: in shared chunks they left one worker
    finishing a chunk of seconds while the other idled. The analytic ones (~1 ms) follow in chunks that
    share a (schedule, microbatch, recompute) prefix where they can, so a worker's caches hit."""
    # Fewer, larger microbatches build smaller plans: the largest first, so the last to finish are small.
    timed = sorted((i for i, c in enumerate(cands) if not analytic(c)), key=lambda i: cands[i].mb_size)
    quick = [i for i, c in enumerate(cands) if analytic(c)]
    tasks_of = [[i] for i in timed] + [quick[k:k + FAST_CHUNK] for k in range(0, len(quick), FAST_CHUNK)]
    results = runner.map(tasks.fast_chunk, [([cands[i] for i in task],) for task in tasks_of],
                         [len(task) for task in tasks_of], lambda n: report("fast", n, total))
    out: list[Scored | None] = [None] * len(cands)
    for task, scored in zip(tasks_of, results, strict=True):
        for i, s in zip(task, scored, strict=True):
            out[i] = s
    return out  # type: ignore[return-value]


def _list_stage(runner: Any, sc: Scenario, cands: list[Candidate], known: list[Scored], options: SearchOptions,
                report: Progress, total: int) -> tuple[list[Scored], dict[Candidate, str]]:
    """The list-timed candidates' estimates, but for those their lower bounds prove could not be confirmed
    (rpsim.search.prune): (the estimates, in the order given, {skipped candidate: why})."""
    ws = Workspace(sc)
    bounded, unresolved = [], []
    for c in cands:
        try:
            resolved = ws.resolve(c)
        except (Infeasible, SpecError):
            unresolved.append(c)  # estimated as usual: its Scored says why no partition
            continue
        ctx = ws.context(c.mb_size, c.recompute)
        bounded.append(Bounded(resolved, lower_bound(ctx, c.schedule, ws.partition(resolved), c.round_size,
                                                     c.defer_w), ctx))
    ordered = _distinct(sorted((s for s in known if s.feasible), key=estimate_key))
    skipped = {}
    if options.prune:
        skipped = prune_skipped(bounded, ordered, confirm_positions(options), options.frontier_extra > 0)
    report("fast", len(skipped), total)
    todo = [b.candidate for b in bounded if b.candidate not in skipped] + unresolved
    return _fast_stage(runner, sorted(todo, key=lambda c: c.sort_key), report, total), skipped


def confirm_positions(options: SearchOptions) -> int:
    """How deep into the ranked estimates the full stage can reach: the top_k, then retries in rank order
    up to `limit` confirmations in all (_full_stage), passing over the frontier picks and the reference
    already confirmed."""
    return confirm_limit(options) + options.frontier_extra + 1


def confirm_limit(options: SearchOptions) -> int:
    """The most plans _full_stage confirms (the reference included) before it stops retrying."""
    return 3 * options.top_k + options.frontier_extra + 1


def analytic(c: Candidate) -> bool:
    """Has an analytic fast estimate: only those seed local searches of hundreds of moves; the others
    (timed by the list timer, milliseconds to seconds each) are ranked as enumerated."""
    return has_fast_estimate(c.schedule, c.defer_w)


def _refine_stage(runner: Any, scored: list[Scored], budget: int, options: SearchOptions, report: Progress
                  ) -> tuple[list[Scored], int]:
    """Local searches from the best feasible candidate of each of the best distinct configurations."""
    seeds: list[Scored] = []
    seen: set[tuple] = set()
    for s in sorted((s for s in scored if s.feasible and analytic(s.candidate)), key=estimate_key):
        if s.candidate.config not in seen and len(seeds) < options.seeds:
            seen.add(s.candidate.config)
            seeds.append(s)
    if not seeds or budget <= len(seeds):
        return [], 0
    per_seed = budget // len(seeds)
    args = [(s.candidate, per_seed, options.seed + i) for i, s in enumerate(seeds)]
    results = runner.map(tasks.refine, args, [per_seed] * len(args),
                         lambda n: report("local search", n, budget))
    # The start of each local search repeats a structured candidate: count only the new evaluations.
    return [r for r, _n in results], sum(n - 1 for _r, n in results)


def _full_stage(runner: Any, sc: Scenario, pool: list[Scored], options: SearchOptions, report: Progress
                ) -> tuple[list[Confirmed], Confirmed | None]:
    ordered = _cheap_first(_distinct(sorted((s for s in pool if s.feasible), key=estimate_key)), sc)
    first = ordered[:options.top_k]
    first += [s for s in _frontier_picks(ordered, options.frontier_extra) if s not in first]
    # Confirmed with the planner's iterations, more where the steady state needs them (rpsim.steady_run).
    batch = [s.candidate for s in first]
    estimates = {s.candidate: s.estimate for s in ordered}
    ref = _resolved_reference(sc) if options.reference else None
    if ref is not None and plan_key(ref) not in {plan_key(c) for c in batch}:
        batch.append(ref)
    done: dict[tuple, Confirmed] = {}
    rest = [s.candidate for s in ordered[options.top_k:]]
    limit = confirm_limit(options)
    while batch:
        # Longest first, so two workers finish together; results still come back in batch order.
        batch.sort(key=lambda c: (-sim_cost(c, sc), c.sort_key))
        total = len(batch)
        out = runner.map(tasks.confirm, [(c, options.fidelity, estimates.get(c)) for c in batch], [1] * total,
                         lambda n, total=total: report("full", n, total))
        done.update({plan_key(c): r for c, r in zip(batch, out, strict=True)})
        # An estimate can call a plan feasible that the simulator finds over memory: confirm more.
        short = options.top_k - sum(r.feasible for k, r in done.items() if ref is None or k != plan_key(ref))
        rest = [c for c in rest if plan_key(c) not in done]
        take = max(0, min(short, limit - len(done)))
        batch, rest = rest[:take], rest[take:]
    return list(done.values()), done.get(plan_key(ref)) if ref is not None else None


def _resolved_reference(sc: Scenario) -> Candidate | None:
    ref = reference_candidate(sc)
    if ref is None:
        return None
    try:
        return Workspace(sc).resolve(ref)
    except (Infeasible, SpecError):
        return ref  # confirm() reports why the partitioner found nothing


def _nearest_miss(runner: Any, pool: list[Scored], confirmed: list[Confirmed], options: SearchOptions,
                  report: Progress) -> list[Confirmed]:
    """Nothing fits: simulate the estimate closest to fitting, so the reason names real figures."""
    missing = [s for s in pool if s.estimate is not None]
    if not missing:
        return []
    nearest = min(missing, key=lambda s: (s.estimate.fill, s.candidate.sort_key)).candidate  # type: ignore[union-attr]
    if any(plan_key(c.candidate) == plan_key(nearest) for c in confirmed):
        return []
    return runner.map(tasks.confirm, [(nearest, options.fidelity)], [1], lambda n: report("full", n, 1))


def sim_cost(c: Candidate, sc: Scenario) -> float:
    """Rough relative cost of simulating a candidate: its compute actions."""
    n_mb = sc.training.global_batch // c.mb_size
    stages = len(c.partition.replace("|", ",").split(",")) if c.partition else 2 * sc.server.n_gpus
    return n_mb * stages * (c.n_iters or (3 if SCHEDULES[c.schedule].TRAITS.optimizer == "async" else 1))


def _cheap_first(ordered: list[Scored], sc: Scenario, rel: float = CHEAP_FIRST_RTOL) -> list[Scored]:
    """Estimates within 0.2% of each other are closer than the estimate's accuracy: among such runs of
    candidates, confirm the cheapest to simulate first (a microbatch of 1 costs four of 4)."""
    out, i = [], 0
    while i < len(ordered):
        lead = ordered[i].estimate.tokens_per_s  # type: ignore[union-attr]
        j = i
        while j < len(ordered) and ordered[j].estimate.tokens_per_s >= lead * (1 - rel):  # type: ignore[union-attr]
            j += 1
        out += sorted(ordered[i:j], key=lambda s: (sim_cost(s.candidate, sc), estimate_key(s)))
        i = j
    return out


def _distinct(ordered: list[Scored]) -> list[Scored]:
    """One candidate per plan; and of twins that differ only in recompute policy and estimate within
    0.5% of each other (RoundPipe's "layer" grain moves a little more than "stage"), the better one."""
    out: list[Scored] = []
    seen: set[tuple] = set()
    twins: dict[tuple, float] = {}
    for s in ordered:
        key = plan_key(s.candidate)
        twin = key[:2] + key[3:]
        tps = s.estimate.tokens_per_s  # type: ignore[union-attr]
        if key in seen or (twin in twins and tps >= 0.995 * twins[twin]):
            continue
        seen.add(key)
        twins.setdefault(twin, tps)
        out.append(s)
    return out


def _frontier_picks(ordered: list[Scored], n: int) -> list[Scored]:
    """Up to n points of the estimated frontier, spread from the least memory towards the fastest."""
    est = frontier(ordered, lambda s: s.estimate.tokens_per_s, lambda s: s.estimate.peak_gpu_bytes)  # type: ignore
    if n <= 0 or len(est) <= 1:
        return []
    step = max(1, (len(est) - 1) // n)
    return est[:-1][::step][:n]
