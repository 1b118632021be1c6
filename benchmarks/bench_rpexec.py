"""rpexec's async RoundPipe against the reference `roundpipe` library at three model sizes (issues 8
and 15), each GPU capped to 24 GiB like an RTX 4090, all on the same model, batch and microbatching:

    python3 benchmarks/bench_rpexec.py --device cuda --size 2.8b --out results/   # 1-2 GPUs
    python3 benchmarks/bench_rpexec.py --device cpu --size tiny                   # smoke run of rpexec

Sizes: 2.8b (hidden 3072, 26 layers, vocab 32000; global batch 64), 8b (Llama-3-8B shape, vocab
128256; global batch 32) and 14b (Llama-2-13B shape, 13.0 B parameters: 24.2 GiB of fp16 weights, so
they fit a 24 GiB GPU only streamed; the 14B-class shape whose host state, 16 bytes per parameter, fits
a 256 GiB host). Sequence 2048, 8 microbatches.

Systems: rpexec:roundpipe (async RoundPipe on the plan `rpsim search` finds), library:auto (the library
with its own partitioner), library:searched (the library with rpsim search's partition, exported as its
ModelExecutePlan by `rpsim export --library-plan`), and rpexec:roundpipe-sync / gpipe / 1f1b on request.
The search runs once here; each system runs in its own subprocess (clean memory caps and peaks) and
prints one JSON line. A system that needs more host memory than the machine has free is skipped with
the reason instead of being run into the OOM killer, and --budget-s bounds the whole run: what does not
fit is reported as skipped. The parent prints the table, the ratios, rpsim's prediction for each plan,
and the physical limit, and writes everything to --out/bench-<size>.json."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_rpexec_report import print_report, report

SHAPE_2_8B = {"n_layers": 26, "hidden": 3072, "n_heads": 24, "n_kv_heads": 8, "head_dim": 128, "mlp_width": 8192,
              "vocab": 32000}
SIZES = {
    "2.8b": {**SHAPE_2_8B, "seq": 2048, "global_batch": 64, "n_mb": 8},
    "8b": {"n_layers": 32, "hidden": 4096, "n_heads": 32, "n_kv_heads": 8, "head_dim": 128, "mlp_width": 14336,
           "vocab": 128256, "seq": 2048, "global_batch": 32, "n_mb": 8},
    "14b": {"n_layers": 40, "hidden": 5120, "n_heads": 40, "n_kv_heads": 40, "head_dim": 128, "mlp_width": 13824,
            "vocab": 32000, "seq": 2048, "global_batch": 32, "n_mb": 8},
    "tiny": {"n_layers": 4, "hidden": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "mlp_width": 128, "vocab": 256,
             "seq": 64, "global_batch": 8, "n_mb": 4},
}
SYSTEMS = ["rpexec:roundpipe", "library:auto", "library:searched"]
OPTIONAL_SYSTEMS = ["rpexec:roundpipe-sync", "rpexec:gpipe", "rpexec:1f1b"]
# host bytes per parameter: rpexec fp32 master + Adam m, v + two fp16 copies = 16, + ~1 for pools;
# the library 16 (fp16 weights and gradients, fp32 copy, m, v) + 2 for the fp16 model handed to it
HOST_BYTES_PER_PARAM = {"rpexec": 17, "library": 18}
GiB = 2**30


def model_spec(size: str):
    from rpsim.specs import ModelSpec
    c = {k: v for k, v in SIZES[size].items() if k not in ("seq", "global_batch", "n_mb")}
    return ModelSpec(name=f"bench-{size}", **c)


def n_params(size: str) -> int:
    from rpexec.model import skeleton_layers
    return sum(p.numel() for layer in skeleton_layers(model_spec(size)) for p in layer.parameters())


def training_spec(size: str, loss_chunk_tokens: int):
    from rpsim.specs import TrainingSpec
    s = SIZES[size]
    return TrainingSpec(seq_len=s["seq"], global_batch=s["global_batch"], mb_size=s["global_batch"] // s["n_mb"],
                        precision="fp16", loss_chunk_tokens=loss_chunk_tokens)


def prepare_plans(a: argparse.Namespace, n_gpus: int) -> dict:
    """Search (once) for the RoundPipe plan rpexec runs and the library runs as a manual partition; write
    plan.json and library-plan.json under --out; rpsim's prediction for the plan. RoundPipe plans come
    from `rpsim search` with the microbatching pinned and a planning memory of --plan-mem-gib (RoundPipe's
    own partitioner bounds only weight bytes: with a chunked loss it picked stages whose recompute
    activations needed ~23 GiB, too close to a 24 GiB cap)."""
    from rpsim.compare import run_one
    from rpsim.export.library_plan import library_plan
    from rpsim.ir.planio import plan_to_json
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.report.files import write_json_atomic
    from rpsim.scenario import make_scenario
    from rpsim.search.run import SearchOptions, search
    from rpsim.search.space import plan_request
    from rpsim.search.workspace import with_training
    training = training_spec(a.size, a.loss_chunk_tokens)
    server = machine_for(a, n_gpus)
    sc = make_scenario(model_spec(a.size), server, training, gpu_memory_bytes=(a.mem_cap_gib or 141) * GiB)
    out: dict = {}
    for schedule in sorted({x.split(":", 1)[1].partition("@")[0] for x in a.systems.split(",") if x.startswith("rpexec:")}
                           | {"roundpipe"}):
        t = time.perf_counter()
        if schedule.startswith("roundpipe") and a.plan_mem_gib > 0:
            planning = make_scenario(sc.model, sc.server_ref, sc.training, gpu_memory_bytes=a.plan_mem_gib * GiB)
            found = search(planning, SearchOptions(schedules=(schedule,), mb_sizes=(training.mb_size,), jobs=a.jobs))
            if found.best is None:
                out[schedule] = {"error": f"rpsim search found no {schedule} plan within {a.plan_mem_gib} GiB"}
                continue
            best = found.best.candidate
            request, label = plan_request(best), best.label()
            scs = with_training(sc, replace(sc.training, recompute=best.recompute))
        else:
            request, label, scs = PlanRequest(schedule), "planner default", sc
        is_async = schedule == "roundpipe"
        plan = make_plan(scs, replace(request, n_iters=a.iters if is_async else 1))
        m = run_one(scs, request).metrics
        path = Path(a.out) / f"{a.size}-{schedule}-plan.json"
        write_json_atomic(path, plan_to_json(plan))
        entry = {"plan_file": str(path), "blocks": 1 if is_async else a.iters, "search_s": time.perf_counter() - t,
                 "machine": server,
                 "predicted": {"plan": label, "iteration_s": m["iteration_s"], "feasible": m["feasible"],
                               "peak_gpu_gib": max(m["peak_gpu_mem_bytes"] or [0.0]) / GiB,
                               "recompute": scs.training.recompute},
                 "partition": plan.partition.to_json()}
        if plan.partition.fused:
            lib_path = Path(a.out) / f"{a.size}-{schedule}-library-plan.json"
            write_json_atomic(lib_path, library_plan(plan))
            entry["library_plan_file"] = str(lib_path)
        out[schedule] = entry
    return out


def machine_for(a: argparse.Namespace, n_gpus: int) -> str:
    """--machine, else the calibrated machine file of this server kind when the repository has one
    (`rpexec calibrate`, experiments/data/machines/), else the h200xN preset."""
    if a.machine:
        return a.machine
    calibrated = Path(__file__).resolve().parents[1] / "experiments" / "data" / "machines" / f"h200x{n_gpus}.toml"
    return str(calibrated) if calibrated.exists() else f"h200x{n_gpus}"


def flops_per_token(size: str) -> tuple[float, float]:
    """(model FLOPs, FLOPs incl. recompute) per token, from rpsim's cost model."""
    from rpsim.catalog import load_gpu
    from rpsim.costs import model_costs
    c = model_costs(model_spec(size), training_spec(size, 0), load_gpu("h200"))
    tokens = c.mb_tokens
    model = sum(x.forward_flops + x.backward_flops for x in c.layers) / tokens
    return model, model + sum(x.recompute_flops for x in c.layers[:-1]) / tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--size", default="2.8b", choices=list(SIZES))
    p.add_argument("--mem-cap-gib", type=float, default=24.0)
    p.add_argument("--iters", type=int, default=4,
                   help="iterations per system (the library runs one call more; each system's rate leaves out "
                        "its warm-up: rpexec's iteration 0, the library's first two calls)")
    p.add_argument("--report", nargs="+", metavar="BENCH_JSON", default=None,
                   help="print README's benchmark table from saved bench-<size>.json files, the library's rate "
                        "re-derived from its call times by the current rule, and exit")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated, in run order (default %(default)s; also {', '.join(OPTIONAL_SYSTEMS)}; "
                        f"SYSTEM@0 runs without the memory cap)")
    p.add_argument("--timeout-s", type=float, default=400, help="per system")
    p.add_argument("--budget-s", type=float, default=0, help="wall-clock budget for the whole run (0: none)")
    p.add_argument("--plan-mem-gib", type=float, default=None,
                   help="GPU memory rpsim search plans RoundPipe for; 0 = the planner's default partition. "
                        "Default: the cap less 2 GiB (rpsim's peak predictions are within 3.1%% in e03 and "
                        "above rpexec's measured peaks by ~9%% in this benchmark; until session 11 it was half "
                        "the cap, from run 1's peaks of up to 2.1x rpsim's, since fixed)")
    p.add_argument("--loss-chunk-tokens", type=int, default=2048,
                   help="rpexec's chunked LM-head loss (0 = full logits, as the library computes it)")
    p.add_argument("--jobs", type=int, default=None, help="search worker processes (default: every core)")
    p.add_argument("--machine", default=None,
                   help="--gpus value rpsim plans and predicts with (default: experiments/data/machines/"
                        "h200xN.toml when present, the calibrated machine, else the h200xN preset)")
    p.add_argument("--out", default="bench-out", help="directory for plans, traces and bench-<size>.json")
    p.add_argument("--trace", action="store_true", help="also write each rpexec run's measured trace to --out")
    p.add_argument("--rpexec-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an rpexec run option for every rpexec system (repeatable): optimizer_threads, "
                        "blocking_sync, warmup, gc_freeze (benchmarks/bench_rpexec_one.py)")
    p.add_argument("--library-fill", default="tiled", choices=["tiled", "normal"],
                   help="the library model's weight values: one tiled block of normal values (fast), or drawn "
                        "per value as rpexec's are (benchmarks/library_run.py, benchmarks/gemm_power.py)")
    p.add_argument("--kernel-trace", action="store_true",
                   help="also record every CUDA kernel and copy of each system's run (torch.profiler, CUDA "
                        "activity only) to --out/<size>-<system>-kernels.json.gz, for benchmarks/kernel_compare.py")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--kernel-trace-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--plan-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--library-plan", default=None, help=argparse.SUPPRESS)
    p.add_argument("--blocks", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--trace-dir", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.plan_mem_gib is None:
        a.plan_mem_gib = max(0.0, a.mem_cap_gib - 2.0) if a.mem_cap_gib > 0 else 0.0
    known = set(SYSTEMS) | set(OPTIONAL_SYSTEMS)
    for system in a.systems.split(","):
        name, _, cap = system.partition("@")
        if name not in known:
            p.error(f"--systems: unknown system {name!r}; valid choices: {', '.join(sorted(known))}")
        if cap:
            try:
                float(cap)
            except ValueError:
                p.error(f"--systems: {system!r}: the memory cap after @ must be a number of GiB")
    for flag in ("iters", "timeout_s"):
        if getattr(a, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be > 0, got {getattr(a, flag)}")
    from benchmarks.bench_rpexec_one import RPEXEC_OPTIONS
    for pair in a.rpexec_option:
        key, eq, _ = pair.partition("=")
        if key not in RPEXEC_OPTIONS or not eq:
            p.error(f"--rpexec-option {pair!r}: valid: KEY=VALUE with KEY one of {', '.join(RPEXEC_OPTIONS)}")
    if a.kernel_trace and a.device != "cuda":
        p.error(f"--kernel-trace records CUDA kernels: valid only with --device cuda, got --device {a.device}")
    if a.budget_s < 0:
        p.error(f"--budget-s must be >= 0, got {a.budget_s}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.report:
        return print_report(a.report)
    if a.one:
        from benchmarks.bench_rpexec_one import one
        one(a)
        return 0
    n_gpus = 2 if a.device == "cpu" else cuda_device_count()
    if n_gpus == 0:  # fail before planning and running anything (it used to fail after 88 s)
        print("bench_rpexec: error: --device cuda: no CUDA device is available here; valid choices here: cpu",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    deadline = t0 + a.budget_s if a.budget_s else float("inf")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    plans = prepare_plans(a, max(1, n_gpus))
    params = n_params(a.size)
    results = []
    for system in a.systems.split(","):
        if system.startswith("library") and a.device != "cuda":
            continue
        system, _, cap = system.partition("@")
        r = run_system(system, a, float(cap) if cap else a.mem_cap_gib, plans, params, deadline)
        if "error" in r and "memory" in r["error"] and "host" not in r["error"] and a.mem_cap_gib > 0 and not cap:
            results.append(r)  # over the GPU cap: say so, then measure it without the cap for reference
            r = run_system(system, a, 0.0, plans, params, deadline)
            r["system"] = f"{r['system']} (no cap)"
        results.append(r)
    summary = report(results, a.device, n_gpus if a.device == "cuda" else 0, flops_per_token(a.size))
    from rpsim.report.files import write_json_atomic
    path = Path(a.out) / f"bench-{a.size}.json"
    write_json_atomic(path, {"size": a.size, "config": SIZES[a.size], "n_params": params,
                             "mem_cap_gib": a.mem_cap_gib, "plan_mem_gib": a.plan_mem_gib, "iters": a.iters,
                             "loss_chunk_tokens": a.loss_chunk_tokens,
                             "plans": plans, "results": results,
                             **summary, "wall_s": time.perf_counter() - t0})
    print(f"wrote {path}")
    return 0


def cuda_device_count() -> int:
    """GPUs, asked in a subprocess so that this process never holds a CUDA context while systems run."""
    proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                          capture_output=True, text=True, check=False)
    try:
        return int(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def run_system(system: str, a: argparse.Namespace, cap_gib: float, plans: dict, params: int,
               deadline: float) -> dict:
    from rpexec.warmup import available_host_bytes
    kind, _, schedule = system.partition(":")
    label = system if kind == "rpexec" else f"roundpipe library ({schedule} partition)"
    base = {"system": label}
    need = params * HOST_BYTES_PER_PARAM["rpexec" if kind == "rpexec" else "library"]
    free = available_host_bytes()
    if need > 0.95 * free:
        return {**base, "error": f"skipped: host memory: needs ~{need / GiB:.0f} GiB "
                                 f"({HOST_BYTES_PER_PARAM[kind if kind == 'rpexec' else 'library']} bytes per "
                                 f"parameter), {free / GiB:.0f} GiB available"}
    remaining = deadline - time.perf_counter()
    if remaining < 30:
        return {**base, "error": "skipped: out of the --budget-s time budget"}
    plan = plans.get(schedule if kind == "rpexec" else "roundpipe", {})
    cmd = [sys.executable, __file__, "--one", system, "--device", a.device, "--size", a.size,
           "--mem-cap-gib", str(cap_gib), "--iters", str(a.iters), "--loss-chunk-tokens", str(a.loss_chunk_tokens)]
    if kind == "rpexec":
        if "plan_file" not in plan:
            return {**base, "error": plan.get("error", f"no plan for {schedule}")}
        cmd += ["--plan-file", plan["plan_file"], "--blocks", str(plan["blocks"])]
        for pair in a.rpexec_option:
            cmd += ["--rpexec-option", pair]
        if a.trace:
            cmd += ["--trace-dir", a.out]
    else:
        cmd += ["--library-fill", a.library_fill]
    if kind != "rpexec" and schedule == "searched":
        if "library_plan_file" not in plan:
            return {**base, "error": plan.get("error", "no fused RoundPipe plan to export")}
        cmd += ["--library-plan", plan["library_plan_file"]]
    if a.kernel_trace:
        cmd += ["--kernel-trace-dir", a.out]
    timeout = min(a.timeout_s, remaining)
    print(f"# running {system} (cap {cap_gib or 'none'} GiB, timeout {timeout:.0f} s) ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=os.environ)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timed out after {timeout:.0f} s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if lines:
        out = {**base, **json.loads(lines[-1][7:])}
        if kind == "rpexec":
            out["predicted"] = plan["predicted"]
        return out
    print(proc.stderr[-3000:], file=sys.stderr)
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:300]
    if proc.returncode < 0:
        tail = f"killed by signal {-proc.returncode} (host OOM killer?): {tail}"
    return {**base, "error": tail}


if __name__ == "__main__":
    raise SystemExit(main())
