"""Speed of `rpsim search`: Qwen3-32B on 8x RTX 4090 with the default options (every core), printing how
many candidate plans each stage evaluated and the wall time; asserts nothing. Target (issue 6): at least
5,000 candidate plans in at most 60 s on a 2-core machine; issue 18: at least 50 plans confirmed by the full
simulator (--confirm 50) within the wall time the default (5, plus 2 frontier plans and the reference) took.
Run: python3 benchmarks/bench_search.py [--model M] [--gpus G] [--budget N] [--jobs J] [--confirm K] [--no-prune]
       [--ranking]
"""
from __future__ import annotations

import argparse
import os
import resource
import time

from rpsim.scenario import make_scenario
from rpsim.search.run import SearchOptions, search
from rpsim.specs import TrainingSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen3-32b")
    p.add_argument("--gpus", default="4090x8")
    p.add_argument("--budget", type=int, default=SearchOptions.budget)
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--confirm", type=int, default=SearchOptions.top_k)
    p.add_argument("--no-prune", action="store_true",
                   help="estimate every list-timed candidate (SearchOptions.prune=False): the figures before pruning")
    p.add_argument("--ranking", action="store_true", help="also print every confirmed plan, best first")
    args = p.parse_args()
    sc = make_scenario(args.model, args.gpus, TrainingSpec())
    t0 = time.perf_counter()
    options = SearchOptions(budget=args.budget, jobs=args.jobs, top_k=args.confirm, prune=not args.no_prune)
    r = search(sc, options)
    wall = time.perf_counter() - t0
    s = r.stage_s
    print(f"{args.model} on {args.gpus}, {args.jobs or os.cpu_count()} worker(s)")
    moves = r.n_fast - r.n_candidates
    moves += len(r.skipped)
    print(f"fast stage:  {r.n_fast} candidate plans ({r.n_candidates - len(r.skipped)} structured + {moves} "
          f"local-search moves), {r.n_fast_feasible} fit; {s['fast']:.1f} s + {s['local_search']:.1f} s "
          f"({1e3 * (s['fast'] + s['local_search']) / max(r.n_fast, 1):.2f} ms wall per plan)")
    print(f"skipped:     {len(r.skipped)} list-timed candidates, by their lower bounds "
          f"({sum(why.startswith('needs') for _c, why in r.skipped)} cannot fit, the rest cannot be confirmed)")
    print(f"full stage:  {r.n_full} plans simulated (make_plan + simulate), {s['full']:.1f} s "
          f"({s['full'] / max(r.n_full, 1):.2f} s wall per plan)")
    print(f"wall:        {wall:.1f} s for {r.n_fast + r.n_full} evaluations")
    print(f"CPU:         {cpu_s():.1f} s, this process and its (finished) workers")
    if r.best is not None:
        best = r.best.ranked_tokens_per_s  # the simulator's, capped at the work bound (rpsim.search.tasks)
        line = f"best:        {r.best.candidate.label()}: {best:.0f} tokens/s"
        if r.reference is not None and r.reference.feasible:
            line += f", {best / r.reference.ranked_tokens_per_s:.3f}x RoundPipe's own partitioner"
        print(line)
    if args.ranking:
        for k, c in enumerate(r.ranked, 1):
            e = c.estimate
            est = f"{e.tokens_per_s:.0f}" if e is not None else "-"
            mem = max(c.metrics["peak_gpu_mem_bytes"] or [0]) / 2**30
            print(f"{k:3d}  {c.ranked_tokens_per_s:6.0f} tokens/s (estimate {est:>5})  {mem:5.1f} GiB  "
                  f"{c.candidate.label()}")


def cpu_s() -> float:
    """User + system CPU of this process and its reaped children (the search's pool is shut down)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
