"""Python bytecodes one RoundPipe `simulate()` executes, per function and per simulated action: a
deterministic profile (benchmarks/notes-sim.md, session 11); prints figures, asserts nothing.

cProfile charges its own per-call overhead to small functions (2-4x here) and sampling is noisy on the
shared 2-core box; counting the opcodes each function executes (sys.settrace with f_trace_opcodes) is
exact and repeatable, and says where the interpreter's work is, which instruction counts
(benchmarks/sim_instructions.py) do not break down. A run is ~100x slower than an untraced one, so the
many-GPU cases take few microbatches.

    python3 benchmarks/sim_opcodes.py --case compare70 [--top 30]
    python3 benchmarks/sim_opcodes.py --case h8 --n-mb 8

Cases as sim_instructions.py's: compare70, q235, and hN (RoundPipe Llama-70B on h100xN, --n-mb microbatches).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_instructions import PARTITION_235B  # noqa: E402 (the benchmarks' shared case definition)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="compare70", help="compare70, q235 or hN (N GPUs)")
    parser.add_argument("--n-mb", type=int, default=8, help="microbatches of the hN cases")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    from rpsim.gc_pause import gc_paused
    from rpsim.planner import PlanRequest, make_plan_prefix
    from rpsim.scenario import make_scenario
    from rpsim.sim.simulate import simulate
    from rpsim.specs import TrainingSpec

    if args.case == "compare70":
        sc = make_scenario("llama-70b", "4090x8", TrainingSpec(seq_len=2048, global_batch=64, mb_size=4))
        req = PlanRequest("roundpipe")
    elif args.case == "q235":
        sc = make_scenario("qwen3-235b-a22b", "4090x8", TrainingSpec(seq_len=2048, global_batch=64, mb_size=4))
        req = PlanRequest("roundpipe", partition=PARTITION_235B)
    elif args.case.startswith("h") and args.case[1:].isdigit():
        sc = make_scenario("llama-70b", f"h100x{args.case[1:]}",
                           TrainingSpec(seq_len=2048, global_batch=args.n_mb, mb_size=1))
        req = PlanRequest("roundpipe")
    else:
        parser.error(f"--case: unknown case {args.case!r}; valid choices: compare70, q235, hN (e.g. h8)")
    plan, planned = make_plan_prefix(sc, req, 9)
    counts: Counter[str] = Counter()

    def trace(frame, event, _arg):  # type: ignore[no-untyped-def]
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
        return trace

    with gc_paused():
        sys.settrace(trace)
        try:
            result = simulate(plan, sc, planned_iters=planned)
        finally:
            sys.settrace(None)
    n_actions, total = len(result.trace.events), sum(counts.values())
    print(f"{args.case}: {n_actions} actions, {total / n_actions:.0f} opcodes per action")
    for name, n in counts.most_common(args.top):
        print(f"{100 * n / total:5.1f}% {n / n_actions:8.1f} per action  {name}")


if __name__ == "__main__":
    main()
