"""Issue 8 benchmark: rpexec (RoundPipe async / sync, GPipe, 1F1B) against the reference `roundpipe`
library on the same ~2.8B Llama-style model and batch, with each GPU capped to 24 GiB like an RTX 4090.

    python3 benchmarks/bench_rpexec.py --device cuda            # on the device machine, 1-2 GPUs
    python3 benchmarks/bench_rpexec.py --device cpu --size tiny # a smoke run of the rpexec path

Each system runs in its own subprocess (clean memory caps and peaks) and prints one JSON line; the
parent prints the comparison table, the ratio to the library, and the physical limit (measured matmul
rate x GPUs / training FLOPs per token, recompute included)."""
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

SIZES = {  # the model: hidden 3072, 26 layers, MLP 8192, 24 heads, 8 KV heads, vocab 32000
    "full": {"n_layers": 26, "hidden": 3072, "n_heads": 24, "n_kv_heads": 8, "head_dim": 128, "mlp_width": 8192, "vocab": 32000,
                 "seq": 2048, "global_batch": 64, "n_mb": 8},
    "tiny": {"n_layers": 4, "hidden": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "mlp_width": 128, "vocab": 256,
                 "seq": 64, "global_batch": 8, "n_mb": 4},
}
SYSTEMS = ["rpexec:roundpipe", "rpexec:roundpipe-sync", "rpexec:gpipe", "rpexec:1f1b", "library"]


def model_spec(size: str):
    from rpsim.specs import ModelSpec
    c = {k: v for k, v in SIZES[size].items() if k not in ("seq", "global_batch", "n_mb")}
    return ModelSpec(name=f"llama-2.8b-{size}", **c)


def peak_host_bytes() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return 0.0


def cap_memory(gib: float) -> None:
    import torch
    for d in range(torch.cuda.device_count()):
        total = torch.cuda.get_device_properties(d).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), d)


def run_rpexec(schedule: str, a: argparse.Namespace) -> dict:
    import torch

    from rpexec.session import RunOptions, run_plan
    from rpsim.planner import make_plan
    from rpsim.scenario import make_scenario
    from rpsim.specs import TrainingSpec
    from rpsim.validate_run import steady_iteration_s
    s = SIZES[a.size]
    n = torch.cuda.device_count() if a.device == "cuda" else 2
    training = TrainingSpec(seq_len=s["seq"], global_batch=s["global_batch"], mb_size=s["global_batch"] // s["n_mb"],
                            precision="fp16", loss_chunk_tokens=a.loss_chunk_tokens)
    server = f"h200x{n}" if n > 1 else "h200x1"
    sc = make_scenario(model_spec(a.size), server, training, gpu_memory_bytes=(a.mem_cap_gib or 141) * 2**30)
    is_async = schedule == "roundpipe"
    request, predicted = plan_for(schedule, sc, a)
    plan = make_plan(sc, replace(request, n_iters=a.iters if is_async else 1))
    blocks = 1 if is_async else a.iters
    t = time.perf_counter()
    result = run_plan(plan, sc.model, s["seq"], training.mb_size,
                      RunOptions(device=a.device, dtype="fp16" if a.device == "cuda" else "fp32", blocks=blocks))
    wall = time.perf_counter() - t
    it_s = steady_iteration_s(result.trace, skip=1)
    steady = [e for e in result.trace.events if e.it >= 2]
    n_steady = len({e.it for e in steady}) or 1
    busy: dict[str, float] = {}
    for e in steady:  # seconds per iteration each action kind kept its lanes busy, summed over GPUs
        busy[e.kind] = busy.get(e.kind, 0.0) + (e.end_s - e.start_s) / n_steady
    if a.trace_dir:
        from rpsim.ir.planio import plan_to_json
        from rpsim.report.files import write_json_atomic
        write_json_atomic(Path(a.trace_dir) / f"{schedule}-trace.json", result.trace.to_json())
        write_json_atomic(Path(a.trace_dir) / f"{schedule}-plan.json", plan_to_json(plan))
    return {"system": f"rpexec {schedule}", "iteration_s": it_s, "tokens_per_s": training.tokens_per_iteration / it_s,
            "wall_s": wall, "n_gpus": n, "peak_gpu_mem_bytes": result.peak_gpu_mem_bytes,
            "peak_host_mem_bytes": peak_host_bytes(), "weights": plan.options.get("weights"),
            "busy_s_per_iter": busy, "predicted": predicted, "host_pool_bytes": result.host_pool_bytes,
            "partition": plan.partition.to_json()}


def plan_for(schedule: str, sc, a: argparse.Namespace) -> tuple:
    """The plan request rpexec runs, and rpsim's prediction for it. RoundPipe plans come from
    `rpsim search` with the microbatching pinned (8 x 8 sequences) and a planning memory of
    --plan-mem-gib: RoundPipe's own partitioner bounds only weight bytes, and with a chunked loss it picks
    stages whose recompute activations need ~23 GiB, too close to a 24 GiB cap to run."""
    from rpsim.compare import run_one
    from rpsim.planner import PlanRequest
    from rpsim.scenario import make_scenario
    from rpsim.search.run import SearchOptions, search
    from rpsim.search.space import plan_request
    from rpsim.search.workspace import with_training
    if schedule.startswith("roundpipe") and a.plan_mem_gib > 0:
        planning = make_scenario(sc.model, sc.server_ref, sc.training, gpu_memory_bytes=a.plan_mem_gib * 2**30)
        found = search(planning, SearchOptions(schedules=(schedule,), mb_sizes=(sc.training.mb_size,), jobs=2))
        if found.best is None:
            raise SystemExit(f"rpsim search found no {schedule} plan within {a.plan_mem_gib} GiB")
        best = found.best.candidate
        request = plan_request(best)
        sc = with_training(sc, replace(sc.training, recompute=best.recompute))
        label = best.label()
    else:
        request, label = PlanRequest(schedule), "planner default"
    m = run_one(sc, request).metrics
    peak = max(m["peak_gpu_mem_bytes"] or [0.0])
    return request, {"plan": label, "iteration_s": m["iteration_s"], "peak_gpu_gib": peak / 2**30,
                     "feasible": m["feasible"], "recompute": sc.training.recompute}


def run_library(a: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from roundpipe import RoundPipe, RoundPipeRunConfig
    from roundpipe.optim import Adam
    from torch import nn

    from rpexec.model import build_layers
    s, m = SIZES[a.size], model_spec(a.size)
    layers = build_layers(m)

    class Logits(nn.Module):  # the library applies loss_fn to the last layer's output
        def __init__(self, head: nn.Module) -> None:
            super().__init__()
            self.norm, self.lm_head = head.norm, head.lm_head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lm_head(self.norm(x))

    seq_model = nn.Sequential(*layers[:-1], Logits(layers[-1])).half()
    model = RoundPipe(seq_model, optim_dtype=torch.float32,
                      model_run_config=RoundPipeRunConfig(num_microbatch=s["n_mb"]))
    opt = Adam(model.optim_parameters(), lr=1e-4)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1)) / s["n_mb"]
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, m.vocab, (s["global_batch"], s["seq"] + 1), generator=g)
    ids, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    times = []
    for _ in range(a.iters + 1):
        t = time.perf_counter()
        model.forward_backward(input_args=(ids,), label=labels, loss_fn=loss_fn)
        model.step(lambda: (opt.step(), opt.zero_grad()))
        times.append(time.perf_counter() - t)
    model.synchronize()
    it_s = sum(times[1:]) / len(times[1:])
    n = torch.cuda.device_count()
    return {"system": "roundpipe library 0.1.1", "iteration_s": it_s,
            "tokens_per_s": s["global_batch"] * s["seq"] / it_s, "wall_s": sum(times), "n_gpus": n,
            "peak_gpu_mem_bytes": [float(torch.cuda.max_memory_allocated(d)) for d in range(n)],
            "peak_host_mem_bytes": peak_host_bytes()}


def matmul_flops_per_s() -> float:
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    return 20 * 2 * 8192**3 / (time.perf_counter() - t)


def flops_per_token(size: str) -> tuple[float, float]:
    """(model FLOPs, FLOPs incl. recompute) per token, from rpsim's cost model."""
    from rpsim.catalog import load_gpu
    from rpsim.costs import model_costs
    from rpsim.specs import TrainingSpec
    s = SIZES[size]
    c = model_costs(model_spec(size), TrainingSpec(seq_len=s["seq"], global_batch=s["global_batch"],
                                                   mb_size=s["global_batch"] // s["n_mb"]), load_gpu("h200"))
    tokens = c.mb_tokens
    model = sum(x.forward_flops + x.backward_flops for x in c.layers) / tokens
    return model, model + sum(x.recompute_flops for x in c.layers[:-1]) / tokens


def one(a: argparse.Namespace) -> None:
    if a.device == "cuda" and a.mem_cap_gib > 0:
        cap_memory(a.mem_cap_gib)
    out = run_library(a) if a.one == "library" else run_rpexec(a.one.split(":", 1)[1], a)
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--size", default="full", choices=list(SIZES))
    p.add_argument("--mem-cap-gib", type=float, default=24.0)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--timeout-s", type=float, default=400)
    p.add_argument("--plan-mem-gib", type=float, default=12.0,
                   help="GPU memory rpsim search plans RoundPipe for (default: half the 24 GiB cap, the "
                        "executor's measured overshoot of rpsim's peak in run 1 was up to 2.1x); 0 = the "
                        "planner's default partition")
    p.add_argument("--loss-chunk-tokens", type=int, default=2048,
                   help="rpexec's chunked LM-head loss (0 = full logits, as the library computes it)")
    p.add_argument("--trace-dir", default=None, help="write each rpexec run's measured trace here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        return one(a)
    results = []
    for system in a.systems.split(","):
        if system == "library" and a.device != "cuda":
            continue
        system, _, cap = system.partition("@")  # "rpexec:gpipe@0": run without a memory cap
        r = run_system(system, a, float(cap) if cap else a.mem_cap_gib)
        if "error" in r and "memory" in r["error"] and a.mem_cap_gib > 0:
            results.append(r)  # over the cap: say so, then measure it without the cap for reference
            r = run_system(system, a, 0.0)
            r["system"] = f"{r['system']} (no cap)"
        results.append(r)
    report(results, a)


def run_system(system: str, a: argparse.Namespace, cap_gib: float) -> dict:
    cmd = [sys.executable, __file__, "--one", system, "--device", a.device, "--size", a.size,
           "--mem-cap-gib", str(cap_gib), "--iters", str(a.iters), "--loss-chunk-tokens", str(a.loss_chunk_tokens),
           "--plan-mem-gib", str(a.plan_mem_gib)] + (["--trace-dir", a.trace_dir] if a.trace_dir else [])
    print(f"# running {system} (cap {cap_gib or 'none'} GiB) ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=a.timeout_s, env=os.environ)
    except subprocess.TimeoutExpired:
        return {"system": system, "error": f"timed out after {a.timeout_s:.0f} s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if lines:
        return json.loads(lines[-1][7:])
    print(proc.stderr[-3000:], file=sys.stderr)
    return {"system": system, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}


def report(results: list[dict], a: argparse.Namespace) -> None:
    model_fpt, hw_fpt = flops_per_token(a.size)
    peak = 989e12 if a.device == "cuda" else None  # H100/H200 dense fp16 datasheet
    lib = next((r for r in results if r["system"].startswith("roundpipe library") and "error" not in r), None)
    print(f"{'system':26s} {'iter_s':>8s} {'tokens/s':>10s} {'MFU':>6s} {'vs lib':>7s} {'peak GPU GiB':>16s} {'host GiB':>9s}")
    for r in results:
        if "error" in r:
            print(f"{r['system']:26s} error: {r['error']}")
            continue
        mfu = model_fpt * r["tokens_per_s"] / (r["n_gpus"] * peak) if peak else float("nan")
        ratio = r["tokens_per_s"] / lib["tokens_per_s"] if lib else float("nan")
        gpu = "/".join(f"{b / 2**30:.1f}" for b in r["peak_gpu_mem_bytes"])
        print(f"{r['system']:26s} {r['iteration_s']:8.3f} {r['tokens_per_s']:10.0f} {mfu:6.1%} {ratio:7.2f} "
              f"{gpu:>16s} {r['peak_host_mem_bytes'] / 2**30:9.1f}")
    predicted = [r for r in results if r.get("predicted")]
    if predicted:
        print("rpsim's prediction for the plan each rpexec row ran (at the capped memory):")
        print(f"{'system':26s} {'plan':44s} {'iter_s':>8s} {'measured':>8s} {'error':>7s} {'GPU GiB':>8s} {'measured':>8s}")
        for r in predicted:
            p = r["predicted"]
            if p["iteration_s"] is None:
                print(f"{r['system']:26s} {p['plan']:44s} infeasible")
                continue
            err = p["iteration_s"] / r["iteration_s"] - 1
            print(f"{r['system']:26s} {p['plan']:44s} {p['iteration_s']:8.3f} {r['iteration_s']:8.3f} {err:+7.1%} "
                  f"{p['peak_gpu_gib']:8.1f} {max(r['peak_gpu_mem_bytes']) / 2**30:8.1f}")
    busy = [r for r in results if "busy_s_per_iter" in r]
    if busy:
        kinds = sorted({k for r in busy for k in r["busy_s_per_iter"]})
        print("busy seconds per steady iteration, by action kind (summed over GPUs; STEP is the CPU optimizer):")
        print(f"{'system':26s} " + " ".join(f"{k:>8s}" for k in kinds))
        for r in busy:
            print(f"{r['system']:26s} " + " ".join(f"{r['busy_s_per_iter'].get(k, 0.0):8.3f}" for k in kinds))
    if a.device == "cuda":
        import torch
        rate, n = matmul_flops_per_s(), torch.cuda.device_count()
        print(f"physical limit: fp16 8192^3 matmul {rate / 1e12:.0f} TFLOP/s x {n} GPUs / {hw_fpt / 1e9:.2f} "
              f"GFLOP per token (with recompute) = {n * rate / hw_fpt:.0f} tokens/s")
    print(f"model FLOPs per token {model_fpt / 1e9:.2f} G (6N + attention); with recompute {hw_fpt / 1e9:.2f} G")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
