"""e03's second question: how well does rpsim predict the reference `roundpipe` library, run as it runs
(its partitioner, its fence, one round of all microbatches per call), against every library run that
benchmarks/bench_rpexec.py saved. experiments/e03_sim_vs_real.py prints these rows after its own."""
from __future__ import annotations

from experiments.e03_sim_vs_real import ROOT, model, prediction_setup

# The library's measured runs of the benchmark (benchmarks/bench_rpexec.py: 8 microbatches of 2048-token
# sequences, fp16, 24 GiB per GPU, 2 x H200), per size: the 2.8B model (8 sequences per microbatch) from
# issue 8's benchmark, issue 15's, session 9's two leases and session 10's; the Llama-3-8B shape (4 per
# microbatch) from issue 15's, session 9's two leases and session 10's three. The library computes its
# loss over full logits (bench's Logits module).
BENCH = ROOT / "experiments" / "data" / "rpexec-bench"
S9, S10, S11 = BENCH / "session9", BENCH / "session10", BENCH / "session11"
LIBRARY_BENCHES = {
    "llama-2.8b": (64, 8, (ROOT / "experiments" / "data" / "rpexec-h200x2" / "bench.json", BENCH / "bench-2.8b.json",
                           S9 / "lease1-before-kernel-warmup" / "bench-2.8b.json",
                           S9 / "lease2" / "with-library" / "bench-2.8b.json",
                           S10 / "call5-2.8b-clocks" / "bench-2.8b.json",
                           S11 / "call1-2.8b-pools-gemm-power" / "bench-2.8b.json",
                           S11 / "call2-2.8b-gc-ab" / "frozen" / "bench-2.8b.json",
                           S11 / "call3-8b-2.8b-8-iters" / "2.8b" / "bench-2.8b.json")),
    "llama3-8b": (32, 4, (BENCH / "bench-8b.json", S9 / "lease1-before-kernel-warmup" / "bench-8b.json",
                          S9 / "lease2" / "with-library" / "bench-8b.json",
                          S10 / "call1-8b-kernel-trace" / "bench-8b.json",
                          S10 / "call3-kernels-and-clocks" / "bench-8b.json",
                          S10 / "call4-8b-full-logits" / "bench-8b.json",
                          S11 / "call3-8b-2.8b-8-iters" / "8b" / "bench-8b.json")),
}


def predict_library(source: str = "profile") -> list[dict]:
    """rpsim's prediction of the reference roundpipe library on the benchmark, RoundPipe as the library
    runs it (rpsim.planner.roundpipe_library_request), from `source` as for the e03 runs (each size's
    profile is e03's, taken at 4 x 2048 tokens and scaled to the benchmark's microbatch), against each
    measured library run with its own partition."""
    import json

    from rpsim.compare import run_one
    from rpsim.planner import roundpipe_library_request
    from rpsim.scenario import make_scenario
    from rpsim.specs import TrainingSpec
    from rpsim.validate_run import steady_call_s
    out = []
    for size, (global_batch, mb_size, paths) in LIBRARY_BENCHES.items():
        measured = [r for path in paths if path.exists() for r in json.loads(path.read_text())["results"]
                    if r["system"].startswith("roundpipe library") and "searched" not in r["system"]
                    and "error" not in r]
        if not measured:
            continue
        t = TrainingSpec(seq_len=2048, global_batch=global_batch, mb_size=mb_size, precision="fp16")
        setup = prediction_setup({"server": "h200x2", "profile": f"{size}-profile.json", "model": {"name": size}},
                                 2, source)
        sc = make_scenario(model(size), setup["server"], t, setup["profile"], gpu_memory_bytes=24 * 2**30)
        m = run_one(sc, roundpipe_library_request(t.n_mb)).metrics
        for r in measured:  # steady: the library's warm-up calls left out (issue 8's run kept no call times)
            measured_s = steady_call_s(r["iteration_times_s"]) if "iteration_times_s" in r else r["iteration_s"]
            out.append({"size": size, "system": r["system"], "predicted_tokens_per_s": m["tokens_per_s"],
                        "measured_tokens_per_s": t.tokens_per_iteration / measured_s,
                        "predicted_s": m["iteration_s"], "measured_s": measured_s})
    return out
