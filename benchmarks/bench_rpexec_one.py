"""One system of benchmarks/bench_rpexec.py, in the subprocess the parent starts for it (`--one SYSTEM`):
rpexec on a saved plan or the `roundpipe` library, each GPU capped, with the GPUs' clocks sampled and,
on request, every kernel recorded; prints one RESULT line of JSON for the parent."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.bench_rpexec import SIZES, model_spec, training_spec
from rpsim.validate_run import steady_call_s

GiB = 2**30


def peak_host_bytes() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return 0.0


def cap_memory(gib: float) -> None:
    import torch
    for d in range(torch.cuda.device_count()):
        total = torch.cuda.get_device_properties(d).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, gib * GiB / total), d)


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


# rpexec run options a benchmark may set (--rpexec-option KEY=VALUE), with how each value is read.
RPEXEC_OPTIONS = {"optimizer_threads": str, "blocking_sync": _flag, "warmup": _flag, "gc_freeze": _flag}


def rpexec_options(pairs: list[str]) -> dict:
    return {k: RPEXEC_OPTIONS[k](v) for k, _, v in (x.partition("=") for x in pairs)}


def run_rpexec(a: argparse.Namespace) -> dict:
    from rpexec.session import RunOptions, run_plan
    from rpsim.ir.planio import load_plan
    from rpsim.validate_run import first_iteration_ratio, iteration_ends_s, steady_iteration_s
    s = SIZES[a.size]
    plan = load_plan(a.plan_file)
    training = training_spec(a.size, a.loss_chunk_tokens)
    t = time.perf_counter()
    result = run_plan(plan, model_spec(a.size), s["seq"], training.mb_size,
                      RunOptions(device=a.device, dtype="fp16" if a.device == "cuda" else "fp32", blocks=a.blocks,
                                 **rpexec_options(a.rpexec_option)))
    wall = time.perf_counter() - t
    trace = result.trace
    it_s = steady_iteration_s(trace)
    steady = set(trace.meta.get("steady_iterations") or [])
    busy: dict[str, float] = {}
    for e in trace.events:  # seconds per steady iteration each action kind kept its lanes busy, all GPUs
        if e.it in steady:
            busy[e.kind] = busy.get(e.kind, 0.0) + (e.end_s - e.start_s) / max(1, len(steady))
    if a.trace_dir:
        from rpsim.report.files import write_json_atomic
        write_json_atomic(Path(a.trace_dir) / f"{a.size}-{a.one.split(':', 1)[1]}-trace.json", trace.to_json())
    ends = iteration_ends_s(trace)
    return {"iteration_s": it_s, "tokens_per_s": training.tokens_per_iteration / it_s, "wall_s": wall,
            "n_gpus": plan.n_gpus, "peak_gpu_mem_bytes": result.peak_gpu_mem_bytes,
            "peak_host_mem_bytes": peak_host_bytes(), "busy_s_per_iter": busy, "host_pool_bytes": result.host_pool_bytes,
            "iteration_ends_s": [ends[i] for i in sorted(ends)], "first_iteration_ratio": first_iteration_ratio(trace),
            "warmup_s": trace.meta.get("warmup_s"), "steady_iterations": sorted(steady),
            "pool_growth_bytes": trace.meta.get("pool_growth_bytes"), "gc": trace.meta.get("gc")}


# The library warms nothing up before its first call: its first two calls create and first-touch its
# optimizer state and pinned buffers (8B, session 9: 11.9 and 7.6 s, then 3.5-3.6 s per call), so its rate
# is rpsim.validate_run.steady_call_s of its call times. Until session 9 only the first call was left out,
# which put the library's 8B rate 22-28% low.


def run_library_system(a: argparse.Namespace) -> dict:
    import torch

    from benchmarks.library_run import run_library
    s = SIZES[a.size]
    lib_plan = json.loads(Path(a.library_plan).read_text()) if a.library_plan else None
    out = run_library(model_spec(a.size), s["seq"], s["global_batch"], s["n_mb"], a.iters, lib_plan, a.library_fill)
    times = out["iteration_times_s"]
    it_s = steady_call_s(times)
    n = torch.cuda.device_count()
    return {**out, "iteration_s": it_s, "tokens_per_s": s["global_batch"] * s["seq"] / it_s, "wall_s": sum(times),
            "n_gpus": n, "first_iteration_ratio": times[0] / it_s,
            "peak_gpu_mem_bytes": [float(torch.cuda.max_memory_allocated(d)) for d in range(n)],
            "peak_host_mem_bytes": peak_host_bytes()}


def one(a: argparse.Namespace) -> None:
    if a.device == "cuda" and a.mem_cap_gib > 0:
        cap_memory(a.mem_cap_gib)
    from contextlib import ExitStack

    from benchmarks.gpu_clocks import sampling_clocks
    run = run_library_system if a.one.startswith("library") else run_rpexec
    clocks: dict = {}
    with ExitStack() as recorders:
        recorders.enter_context(sampling_clocks(clocks))
        if a.kernel_trace_dir:
            from benchmarks.kernel_trace import recording_kernels
            name = f"{a.size}-{a.one.replace(':', '-')}{'-full-logits' if a.loss_chunk_tokens == 0 else ''}-kernels"
            recorders.enter_context(recording_kernels(Path(a.kernel_trace_dir) / f"{name}.json.gz"))
        out = run(a)
    print("RESULT " + json.dumps({**out, **clocks}), flush=True)
