"""What benchmarks/bench_rpexec.py prints: the comparison of one run (tokens/s, ratios, rpsim's
predictions, busy time by action kind, the physical limit measured in the run) and README's benchmark
table rebuilt from saved bench-<size>.json files (`bench_rpexec.py --report`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.matmul_rate import matmul_probe
from rpsim.validate_run import steady_call_s

GiB = 2**30


def loss_chunk_tokens(d: dict, path: Path, system: str) -> int | None:
    """The LM-head loss chunk an rpexec system ran with: the bench file's record, else its plan saved
    beside it (runs before session 10 did not record it); None for the library or when unknown."""
    if not system.startswith("rpexec:"):
        return None
    if "loss_chunk_tokens" in d:
        return d["loss_chunk_tokens"]
    plan = d.get("plans", {}).get(system.split(":", 1)[1], {}).get("plan_file")
    beside = path.parent / Path(plan).name if plan else None
    if beside is None or not beside.exists():
        return None
    return json.loads(beside.read_text())["setup"]["training"].get("loss_chunk_tokens")


def variant_label(d: dict, path: Path, r: dict) -> str:
    """What sets a run apart from the benchmark's default, for its row: rpexec's full-logit loss or its
    heap left unfrozen (an A/B of rpexec.gc_pauses), the library's weights drawn per value."""
    notes = []
    if loss_chunk_tokens(d, path, r["system"]) == 0:
        notes.append("full logits")
    if (r.get("gc") or {}).get("frozen") is False:
        notes.append("gc not frozen")
    if r.get("fill") == "normal":
        notes.append("weights drawn per value")
    return f" ({', '.join(notes)})" if notes else ""


def table_rows(path: Path) -> list[str]:
    """README's benchmark rows for one saved run: size, system, seconds and tokens per iteration, ratio to
    the library's own partition, first / steady iteration, peak GPU and host GiB, fraction of the
    physical limit measured in that run."""
    d = json.loads(path.read_text())
    tokens = d["config"]["global_batch"] * d["config"]["seq"]
    steady = {}
    for r in d["results"]:
        if "error" not in r:
            times = r.get("iteration_times_s")
            steady[r["system"]] = steady_call_s(times) if r["system"].startswith("roundpipe library") and times \
                else r["iteration_s"]
    lib = steady.get("roundpipe library (auto partition)")
    limit = d.get("physical_limit_tokens_per_s")
    rows = []
    for r in d["results"]:
        if "error" in r:
            rows.append(f"| {d['size']} | {r['system']} | {r['error']} | | | | | | |")
            continue
        it_s = steady[r["system"]]
        times = r.get("iteration_times_s")
        first = times[0] / it_s if times else r["first_iteration_ratio"]
        ratio = f"{lib / it_s:.2f}" if lib else "no library run"
        system = r["system"] + variant_label(d, path, r)
        fraction = f"{tokens / it_s / limit:.0%}" if limit else "not measured"
        rows.append(f"| {d['size']} | {system} | {it_s:.3f} | {tokens / it_s:,.0f} | {ratio} | {first:.2f} | "
                    f"{max(r['peak_gpu_mem_bytes']) / GiB:.1f} | {r['peak_host_mem_bytes'] / GiB:.1f} | {fraction} |")
    return rows


def print_report(paths: list[str]) -> int:
    for path in paths:  # every file readable before any row is printed
        try:
            d = json.loads(Path(path).read_text())
            missing = [k for k in ("config", "results") if k not in d]  # the fields the table needs
            if missing:
                raise KeyError(missing[0])
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"bench_rpexec: error: --report: {path!r} is not a bench-<size>.json this script wrote "
                  f"({type(e).__name__}: {e})", file=sys.stderr)
            return 2
    print("| size | system | s / iteration | tokens/s | vs library | 1st / steady | peak GPU GiB | peak host GiB "
          "| of physical limit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        for row in table_rows(Path(path)):
            print(row)
    return 0


def report(results: list[dict], device: str, n_gpus: int, flops: tuple[float, float]) -> dict:
    """Print the comparison of one run; return the summary figures bench-<size>.json keeps. flops: (model
    FLOPs, FLOPs with recompute) per token; n_gpus: CUDA devices here (0: no physical limit measured)."""
    model_fpt, hw_fpt = flops
    peak = 989e12 if device == "cuda" else None  # H100/H200 dense fp16 datasheet
    ok = {r["system"]: r for r in results if "error" not in r}
    lib = ok.get("roundpipe library (auto partition)")
    print(f"{'system':40s} {'iter_s':>8s} {'tokens/s':>10s} {'MFU':>6s} {'vs lib':>7s} {'1st/steady':>10s} "
          f"{'peak GPU GiB':>14s} {'host GiB':>9s}")
    for r in results:
        if "error" in r:
            print(f"{r['system']:40s} error: {r['error']}")
            continue
        mfu = model_fpt * r["tokens_per_s"] / (r["n_gpus"] * peak) if peak else float("nan")
        ratio = r["tokens_per_s"] / lib["tokens_per_s"] if lib else float("nan")
        gpu = "/".join(f"{b / GiB:.1f}" for b in r["peak_gpu_mem_bytes"])
        print(f"{r['system']:40s} {r['iteration_s']:8.3f} {r['tokens_per_s']:10.0f} {mfu:6.1%} {ratio:7.2f} "
              f"{r.get('first_iteration_ratio', float('nan')):10.2f} {gpu:>14s} {r['peak_host_mem_bytes'] / GiB:9.1f}")
    summary: dict = {"model_flops_per_token": model_fpt, "flops_per_token_with_recompute": hw_fpt}
    searched = ok.get("roundpipe library (searched partition)")
    rp = ok.get("rpexec:roundpipe")
    if lib and searched:
        summary["library_searched_over_auto"] = searched["tokens_per_s"] / lib["tokens_per_s"]
        print(f"library with rpsim search's partition / its own: {summary['library_searched_over_auto']:.3f}")
    if lib and rp:
        summary["rpexec_over_library"] = rp["tokens_per_s"] / lib["tokens_per_s"]
    for r in results:
        p = r.get("predicted")
        if p and p.get("iteration_s") and "error" not in r:
            err = p["iteration_s"] / r["iteration_s"] - 1
            print(f"rpsim predicted {p['iteration_s']:.3f} s for {r['system']} ({p['plan']}): {err:+.1%}, "
                  f"peak GPU {p['peak_gpu_gib']:.1f} GiB predicted, {max(r['peak_gpu_mem_bytes']) / GiB:.1f} measured")
    busy = [r for r in results if "busy_s_per_iter" in r]
    if busy:
        kinds = sorted({k for r in busy for k in r["busy_s_per_iter"]})
        print("busy seconds per steady iteration, by action kind (summed over GPUs; STEP is the CPU optimizer):")
        print(f"{'system':40s} " + " ".join(f"{k:>8s}" for k in kinds))
        for r in busy:
            print(f"{r['system']:40s} " + " ".join(f"{r['busy_s_per_iter'].get(k, 0.0):8.3f}" for k in kinds))
    if device == "cuda" and n_gpus:
        rate, n = matmul_probe()
        limit = n * rate / hw_fpt
        summary.update({"matmul_flops_per_s": rate, "physical_limit_tokens_per_s": limit})
        for r in ok.values():
            r["fraction_of_physical_limit"] = r["tokens_per_s"] / limit
        print(f"physical limit: fp16 8192^3 matmul {rate / 1e12:.0f} TFLOP/s x {n} GPUs / {hw_fpt / 1e9:.2f} "
              f"GFLOP per token (with recompute) = {limit:.0f} tokens/s")
    print(f"model FLOPs per token {model_fpt / 1e9:.2f} G (6N + attention); with recompute {hw_fpt / 1e9:.2f} G")
    for r in results:  # the GPUs' clocks while each system worked (benchmarks/gpu_clocks.py)
        if r.get("gpu_clocks"):
            print(f"{r['system']:40s} GPU clocks while working: " + "; ".join(
                f"gpu {g}: SM {c['sm_mhz']:.0f} MHz, {c['power_w']:.0f} W, power-capped {c['power_capped']:.0%}"
                for g, c in r["gpu_clocks"].items()))
    print("JSON " + json.dumps(results))
    return summary
