"""Search skips a list-timed candidate only where that cannot change what it confirms: the lower bounds
(rpsim.search.fast_bound) never exceed the list timer's own figures; on random pools the skips leave the
ranked positions the full stage reaches and the estimated frontier's picks as they were; and a whole
search with the skips confirms and ranks what it ranks without them."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rpsim.errors import Infeasible, SpecError
from rpsim.scenario import make_scenario
from rpsim.search.fast_bound import Bound, lower_bound
from rpsim.search.fast_eval import Estimate
from rpsim.search.fast_list import list_timed
from rpsim.search.options import SearchOptions
from rpsim.search.prune import Bounded, skipped
from rpsim.search.run import _cheap_first, _distinct, _frontier_picks, analytic, estimate_key, search
from rpsim.search.space import Candidate, enumerate_candidates
from rpsim.search.tasks import Scored
from rpsim.search.workspace import Workspace
from rpsim.specs import TrainingSpec

SMALL = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(global_batch=8))
# What search list-times, and RoundPipe with deferred W, which it estimated so until an analytic estimate
# modelled it: lower_bound bounds any candidate's list-timed figures.
TIMED = [c for c in enumerate_candidates(SMALL) if not analytic(c) or c.defer_w]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TIMED))
def test_bounds_never_exceed_the_list_timers_figures(c):
    ws = Workspace(SMALL)
    try:
        part = ws.partition(c)
    except (Infeasible, SpecError):  # the partitioner found none: nothing to bound
        return
    ctx = ws.context(c.mb_size, c.recompute)
    bound = lower_bound(ctx, c.schedule, part, c.round_size, c.defer_w)
    try:
        iteration_s, gpu_bytes, host_bytes = list_timed(ws.scenario(c.mb_size, c.recompute), c, part)
    except SpecError:  # the builder refuses this setup (e.g. DualPipeV with too few microbatches)
        return
    assert bound.iteration_s <= iteration_s * (1 + 1e-9)
    assert bound.gpu_bytes <= gpu_bytes * (1 + 1e-9)
    assert bound.host_bytes <= host_bytes * (1 + 1e-9)


# Random pools: known estimates (analytic) and hidden ones (list-timed), each hidden one with a bound
# below its estimate. The full stage's choices must not depend on the hidden ones the pruning skips.
CTX = Workspace(SMALL).context(2, "stage")
TOKENS = CTX.tokens_per_iteration


def _scored(i: int, schedule: str, mb: int, rc: str, it_s: float, gib: float, defer_w: bool = False) -> Scored:
    c = Candidate(schedule, mb, rc, "p", 1, 8, partition=f"{i}", defer_w=defer_w)
    return Scored(c, Estimate(it_s, TOKENS / it_s, gib * 2**30, 0.0, 0.5))


# Iteration times and memories bunched closer than the tolerances (0.01% tie rounding, 0.2% cheap-first
# runs, 0.5% twins, 1% frontier) so that every rule's edge is reached.
times_s = st.sampled_from([10.0, 10.0005, 10.001, 10.015, 10.03, 10.05, 10.1, 10.2, 11.0, 12.0])
gibs = st.sampled_from([5.0, 5.02, 5.05, 6.0, 8.0, 8.05, 12.0])
slack = st.sampled_from([0.0, 0.0005, 0.005, 0.01, 0.02, 0.05, 0.5])
entries = st.tuples(st.integers(1, 3), st.sampled_from(["stage", "layer"]), times_s, gibs)
hidden_entries = st.tuples(st.integers(1, 3), st.sampled_from(["stage", "layer"]), times_s, gibs, slack,
                           st.sampled_from([0.0, 0.05, 0.5, 2.0]), st.integers(0, 3))


def _choices(pool: list[Scored], positions: int, picks: int) -> tuple:
    ordered = _cheap_first(_distinct(sorted(pool, key=estimate_key)), SMALL)
    return [s.candidate for s in ordered[:positions]], [s.candidate for s in _frontier_picks(ordered, picks)]


@settings(max_examples=400, deadline=None)
@given(st.lists(entries, min_size=1, max_size=25), st.lists(hidden_entries, max_size=12), st.integers(1, 6),
       st.integers(0, 2))
# A skipped plan 0.15% slower than the best but cheaper to simulate would be confirmed first within the
# cheap-first run: the margin CHEAP_FIRST_RTOL is what keeps it estimated.
@example([(1, "stage", 10.0, 8.0), (1, "stage", 10.0, 8.0)], [(3, "stage", 10.015, 8.0, 0.0, 0.0, 0)], 1, 0)
def test_skipped_candidates_change_no_confirmed_position_nor_frontier_pick(known_rows, hidden_rows, positions,
                                                                          picks):
    known = [_scored(i, "roundpipe", mb, rc, it, gib) for i, (mb, rc, it, gib) in enumerate(known_rows)]
    hidden, bounded = [], []
    for i, (mb, rc, it, gib, slack_s, slack_gib, twin) in enumerate(hidden_rows):
        # A twin number shared by hidden rows makes them the same plan but for recompute (same partition).
        s = _scored(100 + twin if twin else 200 + i, "roundpipe", mb, rc, it, gib, defer_w=True)
        hidden.append(s)
        bound = Bound(it * (1 - slack_s), max(gib - slack_gib, 0.0) * 2**30, 0.0)
        bounded.append(Bounded(s.candidate, bound, CTX))
    ordered = _distinct(sorted(known, key=estimate_key))
    skip = skipped(bounded, ordered, positions, picks > 0)
    kept = [s for s in hidden if s.candidate not in skip]
    full, pruned = _choices(known + hidden, positions, picks), _choices(known + kept, positions, picks)
    assert pruned[0] == full[0]
    assert pruned[1] == full[1]


def test_a_candidate_whose_memory_bound_exceeds_the_gpu_is_skipped_alone():
    s = _scored(1, "roundpipe", 2, "stage", 11.0, 5.0, defer_w=True)
    over = Bounded(s.candidate, Bound(11.0, CTX.gpu_memory_bytes * 1.01, 0.0), CTX)
    fits = Bounded(replace(s.candidate, recompute="layer"), Bound(11.0, 1.0, 0.0), CTX)
    out = skipped([over, fits], [], positions=5)
    assert list(out) == [over.candidate] and "memory" in out[over.candidate]


def test_search_with_and_without_the_skips_confirms_the_same_ranking():
    # Qwen3-32B on two GPUs: the list-timed zero-bubble plans hold half the model per GPU, over its memory.
    sc = make_scenario("qwen3-32b", "4090x2", TrainingSpec(global_batch=4))
    options = SearchOptions(budget=150, top_k=1, frontier_extra=0, seeds=2, jobs=1, mb_sizes=(2, 4),
                            schedules=("roundpipe", "roundpipe-sync", "zb-h1"))
    pruned, full = search(sc, options), search(sc, replace(options, prune=False))
    assert pruned.skipped and not full.skipped  # the case prunes something
    assert pruned.n_fast == full.n_fast - len(pruned.skipped)

    def ranked(r):
        return [(c.candidate, c.ranked_tokens_per_s, c.metrics["iteration_s"]) for c in r.ranked]
    assert ranked(pruned) == ranked(full)
    assert [c.candidate for c in pruned.frontier] == [c.candidate for c in full.frontier]
