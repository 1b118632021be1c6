"""Where rpexec's time goes at 8B (issue 15): one run of an exported RoundPipe plan with probes around it.

    python3 benchmarks/diagnose_rpexec.py --out results/diag            # 2x H200, ~4 minutes

Default setup is the issue's: Llama-3-8B shape, 2x H200 (rpsim plans and predicts with the calibrated
machine file experiments/data/machines/h200x2.toml when present), seq 2048, global batch 32, 8
microbatches, the RoundPipe plan `rpsim export` makes by default (or --plan FILE, e.g. the benchmark's
searched plan), 4 iterations, no GPU memory cap (as in the issue). Each part is independent: one that fails is reported and the
rest still run. Measured, and written to --out/diagnose.json:

1. per-iteration times, warm-up seconds, the trace's steady iterations and iteration 0 / steady;
2. the host STEP: busy seconds per steady iteration, its parameter rate, and the same STEP code's rate
   in isolation (rpexec.profile) at the run's number of staged gradients per STEP;
3. the host step's rate alone, while both GPUs stream weights and gradients through pinned host memory
   at full speed (the DMA traffic a run makes), and with GEMM-issuing lane threads added;
4. every action class's mean duration, measured against rpsim's prediction for the plan (with
   --profile, the calibrated prediction), OFFLOAD included, and F / B / FB per layer against one
   decoder layer timed alone on one GPU;
5. GIL and threads: while the run goes, a probe thread sleeps 1 ms at a time and records how late it
   wakes (the wait for the GIL, plus scheduling), and a sampler reads each thread's CPU seconds from
   /proc (lane threads, the optimizer's OpenMP team, the rest);
6. optionally (--torch-profile) a torch profiler trace of the whole run, to --out."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.host_probes import GilProbe, ThreadSampler, idle_gil_probe

GiB = 2**30


def part(results: dict, name: str, fn, *args, **kwargs):
    """Run one measurement; record its result or its error, never stop the script. diagnose.json is
    rewritten after every part, so a run killed by its time limit keeps what it measured."""
    t = time.perf_counter()
    print(f"# {name} ...", file=sys.stderr, flush=True)
    try:
        results[name] = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - one failed part must not lose the others
        traceback.print_exc()
        results[name] = {"error": f"{type(e).__name__}: {e}"}
    results.setdefault("part_s", {})[name] = time.perf_counter() - t
    if results.get("_out"):
        from rpsim.report.files import write_json_atomic
        write_json_atomic(Path(results["_out"]) / "diagnose.json", {k: v for k, v in results.items() if k != "_out"})
    return results[name]


def export_plan(a: argparse.Namespace) -> str:
    if a.plan:
        return a.plan
    from rpsim.cli.main import main as rpsim_main
    path = str(Path(a.out) / "diagnose-plan.json")
    argv = ["export", "--model", a.model, "--gpus", a.gpus, "--seq", str(a.seq), "--global-batch", str(a.global_batch),
            "--n-mb", str(a.n_mb), "--precision", "fp16", "--schedule", "roundpipe", "--iters", str(a.iters),
            "-o", path] + (["--profile", a.profile] if a.profile else []) + (
            ["--gpu-memory-gib", str(a.mem_cap_gib)] if a.mem_cap_gib else [])
    if rpsim_main(argv) != 0:
        raise RuntimeError("rpsim export failed: " + " ".join(argv))
    return path


def run_with_probes(a: argparse.Namespace, plan_path: str) -> dict:
    import torch

    from rpexec.checks import model_and_shape
    from rpexec.session import RunOptions, run_plan
    from rpsim.ir.planio import load_plan
    from rpsim.report.files import write_json_atomic
    from rpsim.validate_run import first_iteration_ratio, iteration_ends_s, steady_iteration_s
    plan = load_plan(plan_path)
    model, seq, mb, _ = model_and_shape(plan)
    profiler = None
    if a.torch_profile:
        from torch.profiler import ProfilerActivity, profile
        profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    t = time.perf_counter()
    with ThreadSampler() as sampler, GilProbe() as gil:
        if profiler is not None:
            profiler.__enter__()
        try:
            result = run_plan(plan, model, seq, mb, RunOptions(device=a.device, dtype="fp16" if a.device == "cuda" else "fp32"))
        finally:
            if profiler is not None:
                profiler.__exit__(None, None, None)
    wall = time.perf_counter() - t
    if profiler is not None:
        profiler.export_chrome_trace(str(Path(a.out) / "torch-profile.json"))
    trace = result.trace
    write_json_atomic(Path(a.out) / "diagnose-trace.json", trace.to_json())
    ends = iteration_ends_s(trace)
    steady = set(trace.meta.get("steady_iterations") or [])
    layer_params = {}
    for (g, _lane), acts in plan.lanes.items():
        for x in acts:
            if x.kind == "STEP" and x.chunk is not None:
                layer_params[(g, str(x))] = x.chunk
    sizes = [sum(p.numel() for p in layer.parameters()) for layer in skeleton(model)]
    step_s = step_params = 0.0
    busy: dict[str, float] = {}
    for e in trace.events:
        if e.it not in steady:
            continue
        busy[e.kind] = busy.get(e.kind, 0.0) + (e.end_s - e.start_s) / max(1, len(steady))
        if e.kind == "STEP" and (e.gpu, e.action) in layer_params:
            step_s += e.end_s - e.start_s
            step_params += sizes[layer_params[(e.gpu, e.action)]]
    del result
    torch.cuda.empty_cache()
    return {"plan": plan_path, "schedule": plan.schedule, "optimizer": plan.optimizer, "wall_s": wall,
            "iteration_ends_s": [ends[i] for i in sorted(ends)], "steady_iterations": sorted(steady),
            "steady_iteration_s": steady_iteration_s(trace), "first_iteration_ratio": first_iteration_ratio(trace),
            "warmup_s": trace.meta.get("warmup_s"), "busy_s_per_steady_iteration": busy,
            "step_params_per_s_in_run": step_params / step_s if step_s else None,
            "staged_per_step": staged_per_step(plan),
            "thread_cpu_s": sampler.summary(), "gil_wake_late": gil.summary(),
            "peak_gpu_mem_gib": [b / GiB for b in trace.meta.get("peak_gpu_mem_bytes", [])]}


def staged_per_step(plan) -> float:
    """Gradient downloads (OFFLOADs) per host STEP: the gradients each STEP sums."""
    count = {k: sum(1 for acts in plan.lanes.values() for x in acts if x.kind == k) for k in ("OFFLOAD", "STEP")}
    return count["OFFLOAD"] / count["STEP"] if count["STEP"] else 0.0


def skeleton(model):
    from rpexec.model import skeleton_layers
    return skeleton_layers(model)


def isolated_step_rate(a: argparse.Namespace) -> dict:
    """rpexec's STEP alone (rpexec.profile: one layer, 1 and 4 staged gradients -> Adam and
    accumulation rates)."""
    from rpexec.profile import profile_cpu_optimizer
    return profile_cpu_optimizer("fp16", a.step_params, a.step_reps)


def step_rate_under_load(a: argparse.Namespace) -> dict:
    """The same STEP while every GPU uploads and downloads pinned buffers without pause (the weight and
    gradient streams of a RoundPipe run), then with one GEMM-issuing Python lane thread per GPU added
    (rpexec.calibrate's load): the first slowdown is DRAM bandwidth taken by the DMA, the second adds
    the lane threads' cores and GIL."""
    import torch

    from rpexec.background_load import BackgroundLoad
    from rpexec.profile import cpu_optimizer_step_times
    alone = cpu_optimizer_step_times("fp16", a.step_params, a.step_reps)
    out: dict = {"alone": alone}
    for name, compute in (("dma", False), ("dma_and_gemm_lanes", True)):
        with BackgroundLoad("cuda", torch.cuda.device_count(), torch.float16, compute=compute) as load:
            times = cpu_optimizer_step_times("fp16", a.step_params, a.step_reps)
        out[name] = {**times, "copy_gb_per_s": load.copied_bytes / load.elapsed_s / 1e9,
                     "slowdown_4_staged": times["step_4_staged_s"] / alone["step_4_staged_s"],
                     "slowdown_1_staged": times["step_1_staged_s"] / alone["step_1_staged_s"]}
    return out


def isolated_layer_times(a: argparse.Namespace, plan_path: str) -> dict:
    """One decoder layer on GPU 0 alone, fp16, the plan's microbatch: forward, and forward + backward
    (what B costs per layer with stage recompute)."""
    import torch

    from rpexec.checks import model_and_shape
    from rpexec.model import DecoderLayer
    from rpsim.ir.planio import load_plan
    model, seq, mb, _ = model_and_shape(load_plan(plan_path))
    dev = torch.device("cuda", 0)
    layer = DecoderLayer(model).to(dev, torch.float16)
    x = torch.randn(mb, seq, model.hidden, device=dev, dtype=torch.float16) * 0.1
    probe = torch.randn_like(x)

    def timed(fn, reps: int = 5) -> float:
        fn()
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize(dev)
        return (time.perf_counter() - t) / reps

    def forward() -> None:
        with torch.no_grad():
            layer(x)

    def forward_backward() -> None:
        (layer(x.detach().requires_grad_(True)) * probe).sum().backward()

    out = {"forward_s": timed(forward), "forward_backward_s": timed(forward_backward)}
    layer.to("meta")  # free its device memory before the next part runs
    torch.cuda.empty_cache()
    return out


def per_class(a: argparse.Namespace, plan_path: str, layer_times: dict) -> dict:
    """rpsim validate's per-class comparison, and F / B / FB per layer against the isolated layer."""
    from rpsim.ir.planio import load_plan
    from rpsim.scenario import scenario_from_setup
    from rpsim.sim.trace import load_trace
    from rpsim.validate_run import validate
    plan = load_plan(plan_path)
    setup = dict(plan.setup)
    if a.profile:
        setup["profile"] = a.profile
    trace = load_trace(Path(a.out) / "diagnose-trace.json")
    v = validate(plan, trace, scenario_from_setup(setup, plan.n_gpus))
    out = {"iteration_s": v["iteration_s"], "classes": v["classes"]}
    if "forward_s" in layer_times:
        per_layer: dict[str, list[float]] = {}
        for e in trace.events:
            if e.kind in ("F", "B", "FB") and e.stage is not None:
                lo, hi = plan.partition.ranges("F" if e.kind == "F" else "B")[e.stage]
                decoder = max(1, min(hi, plan.partition.n_layers - 1) - max(lo, 1))
                per_layer.setdefault(e.kind, []).append((e.end_s - e.start_s) / decoder)
        iso = {"F": layer_times["forward_s"], "B": layer_times["forward_backward_s"],
               "FB": layer_times["forward_backward_s"]}
        out["per_layer_vs_isolated"] = {k: {"measured_median_s": statistics.median(v_), "isolated_s": iso[k],
                                            "ratio": statistics.median(v_) / iso[k]} for k, v_ in per_layer.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for diagnose.json, the plan and the trace")
    p.add_argument("--plan", default=None, help="a RoundPipe plan.json (default: rpsim export with the flags below)")
    p.add_argument("--model", default="llama3-8b")
    p.add_argument("--gpus", default=None,
                   help="server for the plan and rpsim's prediction (default: the calibrated machine file "
                        "experiments/data/machines/h200x2.toml when present, else h200x2)")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--n-mb", type=int, default=8)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--mem-cap-gib", type=float, default=0.0,
                   help="per-GPU cap in GiB (default none, as in the issue's run)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cpu: a smoke run of the script's logic (no DMA or layer parts)")
    p.add_argument("--profile", default=None, help="profile.json for rpsim's prediction (the calibrated one)")
    p.add_argument("--step-params", type=int, default=None,
                   help="parameters of the layer the isolated STEP rates use (default rpexec.profile's: a "
                        "state eight times the last-level cache)")
    p.add_argument("--step-reps", type=int, default=3)
    p.add_argument("--torch-profile", action="store_true", help="also record a torch profiler trace (slow)")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: dma, run, layer")
    a = p.parse_args(argv)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    if a.gpus is None:
        calibrated = Path(__file__).resolve().parents[1] / "experiments" / "data" / "machines" / "h200x2.toml"
        a.gpus = str(calibrated) if calibrated.exists() else "h200x2"
    skip = set(filter(None, a.skip.split(",")))
    if a.device == "cpu":
        skip |= {"dma", "layer"}
    results: dict = {"argv": sys.argv[1:] if argv is None else argv, "_out": a.out}
    import torch
    if a.mem_cap_gib and a.device == "cuda":
        for d in range(torch.cuda.device_count()):
            total = torch.cuda.get_device_properties(d).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, a.mem_cap_gib * GiB / total), d)
    plan_path = part(results, "plan", export_plan, a)
    part(results, "gil_idle", idle_gil_probe)
    part(results, "step_isolated", isolated_step_rate, a)
    if "dma" not in skip:
        part(results, "step_under_load", step_rate_under_load, a)
    layer = part(results, "layer_isolated", isolated_layer_times, a, plan_path) if "layer" not in skip else {}
    if "run" not in skip and isinstance(plan_path, str):
        run = part(results, "run", run_with_probes, a, plan_path)
        if "error" not in run:
            part(results, "classes", per_class, a, plan_path, layer or {})
    results.pop("_out")
    from rpsim.report.files import write_json_atomic
    write_json_atomic(Path(a.out) / "diagnose.json", results)
    print_summary(results)
    return 0


def print_summary(r: dict) -> None:
    def get(*keys, default=None):
        x = r
        for k in keys:
            if not isinstance(x, dict) or k not in x:
                return default
            x = x[k]
        return x
    run = r.get("run", {})
    print("== rpexec diagnosis ==")
    for name, value in r.items():
        if isinstance(value, dict) and "error" in value:
            print(f"{name}: FAILED {value['error']}")
    if "iteration_ends_s" in run:
        ends = run["iteration_ends_s"]
        spans = [ends[0]] + [b - a_ for a_, b in zip(ends, ends[1:])]
        print("iteration spans s: " + ", ".join(f"{s:.2f}" for s in spans)
              + f"; steady {run['steady_iteration_s']:.3f} s (its {run['steady_iterations']}), "
              f"iteration 0 / steady = {run['first_iteration_ratio']:.2f}, warm-up {run['warmup_s']}")
        print("busy s per steady iteration: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(run["busy_s_per_steady_iteration"].items())))
    iso = r.get("step_isolated", {})
    in_run = run.get("step_params_per_s_in_run")
    if "adam_params_per_s" in iso and in_run:
        k = run["staged_per_step"]
        alone = 1 / (1 / iso["adam_params_per_s"] + k / iso["grad_accumulate_params_per_s"])
        print(f"host STEP ({k:.1f} staged gradients each): {in_run / 1e9:.2f} G params/s in the run, "
              f"{alone / 1e9:.2f} isolated ({in_run / alone:.2f}x)")
    load = r.get("step_under_load", {})
    for name in ("dma", "dma_and_gemm_lanes"):
        if name in load:
            x = load[name]
            print(f"host STEP under {name}: {x['slowdown_4_staged']:.2f}x slower (4 staged), "
                  f"{x['slowdown_1_staged']:.2f}x (1 staged); background copies {x['copy_gb_per_s']:.0f} GB/s")
    for row in get("classes", "classes", default=[]) or []:
        print(f"  {row['class']:8s} measured {row['measured_mean_s'] * 1e3:9.2f} ms  predicted "
              f"{row['predicted_mean_s'] * 1e3:9.2f} ms  (n {row['n_measured']})")
    for k, v in (get("classes", "per_layer_vs_isolated", default={}) or {}).items():
        print(f"  {k} per decoder layer {v['measured_median_s'] * 1e3:.2f} ms vs isolated {v['isolated_s'] * 1e3:.2f} ms "
              f"({v['ratio']:.2f}x)")
    if "gil_wake_late" in run:
        print(f"GIL probe (1 ms sleeps, lateness): idle p50 {get('gil_idle', 'p50_ms', default=0):.2f} / p99 "
              f"{get('gil_idle', 'p99_ms', default=0):.2f} ms; during the run p50 {run['gil_wake_late']['p50_ms']:.2f} / "
              f"p99 {run['gil_wake_late']['p99_ms']:.2f} ms")
        print("thread CPU s during the run: " + ", ".join(f"{k} {v:.1f}" for k, v in run["thread_cpu_s"].items()))
    print(f"part seconds: {json.dumps({k: round(v, 1) for k, v in r.get('part_s', {}).items()})}")


if __name__ == "__main__":
    raise SystemExit(main())
