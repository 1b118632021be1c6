"""A/B: host waits on CUDA events that spin (CUDA's default) against blocking ones, on one e03 run.

    python3 benchmarks/ab_blocking_sync.py --size llama-1.8b --gpus 2 --schedule roundpipe

Prints the steady iteration time and the CPU optimizer's busy seconds per iteration for each."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", default="llama-1.8b")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--schedule", default="roundpipe")
    a = p.parse_args()
    from experiments.e03_sim_vs_real import SEQ, model, training
    from rpexec.session import RunOptions, run_plan
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.scenario import make_scenario
    from rpsim.validate_run import steady_iteration_s
    t = training()
    sc = make_scenario(model(a.size), f"h200x{a.gpus}", t)
    plan = make_plan(sc, PlanRequest(a.schedule, n_iters=4 if a.schedule == "roundpipe" else 1))
    blocks = 1 if a.schedule == "roundpipe" else 4
    for blocking in (False, True, False, True):
        r = run_plan(plan, sc.model, SEQ, t.mb_size, RunOptions(device="cuda", dtype="bf16", blocks=blocks,
                                                                 blocking_sync=blocking))
        its = {e.it for e in r.trace.events if e.it >= 1}
        step = sum(e.end_s - e.start_s for e in r.trace.events if e.kind == "STEP" and e.it >= 1) / len(its)
        print(f"blocking_sync={blocking!s:5s} steady iteration {steady_iteration_s(r.trace):.3f} s, "
              f"CPU STEP {step:.3f} s per iteration", flush=True)


if __name__ == "__main__":
    main()
