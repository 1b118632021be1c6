"""What experiments/e02_paper_throughput.py prints: its table, the cost-model check, each model against the
paper with the causes of every difference over EXPLAIN_RATIO, and whether the paper's ranking holds."""
from __future__ import annotations

import math

from experiments.e02_paper_throughput import (
    EXPLAIN_RATIO,
    GOAL_RATIO,
    MOE,
    PAPER_FSDP_OFFLOAD,
    PAPER_TOKENS_PER_S,
    PRECISION,
    RUNS,
)

BASELINES = ("megatron-pp", "mobius")


def ranking(rows: list[dict], name: str) -> tuple[bool, str]:
    """The paper's ranking: RoundPipe ahead of every baseline that runs; for 235B LoRA only RoundPipe runs.
    Compared at the largest microbatch (up to the paper's) that fits each system, since the paper's runs
    fit; and, as a check that ignores our memory model, at the paper's microbatch."""
    mine = {r["system"]: r for r in rows if r["model"] == name}
    rp = mine["roundpipe"]
    fitting = [mine[s] for s in BASELINES if mine[s]["fit_mb_size"]]
    raw = max((mine[s] for s in BASELINES), key=lambda r: r["tokens_per_s"])
    note = f"at the paper's microbatch {rp['tokens_per_s'] / raw['tokens_per_s']:.2f}x {raw['system']}"
    if not rp["fit_mb_size"]:
        return False, "RoundPipe fits no microbatch; " + note
    if not fitting:
        return True, f"only RoundPipe fits; {note}"
    best = max(fitting, key=lambda r: r["fit_tokens_per_s"])
    x = rp["fit_tokens_per_s"] / best["fit_tokens_per_s"]
    ok = x > 1 and name != "qwen3-235b-a22b"  # the paper: no baseline runs 235B LoRA on the 4090s
    return ok, (f"{x:.2f}x the best fitting baseline ({best['system']}, mb {best['fit_mb_size']} vs "
                f"{rp['fit_mb_size']}); {note}")


def report(rows: list[dict], check: list[dict]) -> None:
    from rpsim.report.table import format_table
    keys = ("model", "system", "schedule", "mb_size", "tokens_per_s", "feasible", "max_seq", "paper_tokens_per_s",
            "ratio", "paper_max_seq", "mfu_pct", "bubble_pct", "peak_gpu_gib", "fit_mb_size", "fit_tokens_per_s",
            "rounds_of_n_tokens_per_s", "measured_layers_tokens_per_s")
    heads = ("model", "system", "schedule", "mb", "tokens/s", "fits", "max_seq", "paper", "ratio", "paper_seq",
             "MFU%", "bubble%", "GPU_GiB", "fit_mb", "fit_tok/s", "M_R=8", "measured_layers")
    print(format_table(heads, [[r[k] for k in keys] for r in rows]))
    print("\nOut of memory at the paper's microbatch:")
    for r in rows:
        if not r["feasible"]:
            print(f"  {r['model']:16s} {r['system']:15s} {r['reason']}")
    odd = [f"{r['model']}/{r['system']}" for r in rows if not r["max_seq_monotone"]]
    if odd:
        print(f"  non-monotone in sequence length (a shorter power of two failed): {', '.join(odd)}")
    print("\nCost-model check at the paper's 4 x 2048 tokens per microbatch (ms; layer = fwd + recompute + bwd, "
          f"head = fwd + bwd), ours ({PRECISION}; bf16 = fp32 accumulate for comparison) against the authors' "
          "RTX 4090 measurements (roundpipe.md):")
    print(format_table(list(check[0]), [list(c.values()) for c in check]))
    by_model = {c["model"]: c for c in check}
    print(f"\nRoundPipe against the paper (goal: within {100 * GOAL_RATIO:.0f}%):")
    for r in rows:
        if r["system"] == "roundpipe" and r["paper_tokens_per_s"]:
            off = abs(r["ratio"] - 1)
            print(f"  {r['model']:16s} ours {r['tokens_per_s']:>7,} vs paper {r['paper_tokens_per_s']:>7,}: "
                  f"x{r['ratio']:.2f} ({'met' if off <= GOAL_RATIO else 'MISSED'}); max seq "
                  f"{r['max_seq'] // 1024}K vs {r['paper_max_seq'] // 1024}K")
            for line in explain(r, by_model[r["model"]]):
                print(f"    {line}")
    print("\nThe paper's ranking (RoundPipe ahead of the baselines, 1.48-2.16x for 1.7B-32B; 235B fits only "
          "RoundPipe):")
    for name in RUNS:
        ok, note = ranking(rows, name)
        print(f"  {name:16s} {'kept' if ok else 'NOT kept'}: {note}")
    for name, fsdp in PAPER_FSDP_OFFLOAD.items():
        rp = next(r for r in rows if r["model"] == name and r["system"] == "roundpipe")
        print(f"  {name}: the paper's RoundPipe / its FSDP-offload = {PAPER_TOKENS_PER_S[name] / fsdp:.2f}x; our "
              f"RoundPipe / that FSDP figure = {rp['tokens_per_s'] / fsdp:.2f}x (FSDP is not simulated)")


def explain(r: dict, c: dict) -> list[str]:
    """The causes of a difference over EXPLAIN_RATIO, in this row's numbers."""
    from rpsim.sim.memory import ALLOCATOR_OVERHEAD
    out = []
    paper = r["paper_tokens_per_s"]
    if abs(r["ratio"] - 1) > EXPLAIN_RATIO:
        # The share of the gap (in log terms) that the measured layer times remove.
        share = 1 - math.log(r["measured_layers_ratio"]) / math.log(r["ratio"])
        moe = " (MoE expert GEMMs grouped under balanced routing, LoRA adapters as plain GEMMs)" if (
            c["model"] in MOE) else ""
        out.append(f"tokens/s: our cost model prices a transformer layer at {c['layer_ratio']}x (bf16: "
                   f"{c['layer_ratio_bf16']}x) and the head at {c['head_ratio']}x the authors' measured times "
                   f"(cost-model check above); the same simulation driven by the measured times gives "
                   f"{r['measured_layers_tokens_per_s']:,} (x{r['measured_layers_ratio']}), so {share:.0%} of the "
                   f"gap (log scale) is the cost model's compute speed: GEMM efficiency up to 0.85 of the 330 TFLOPS "
                   f"fp16-accumulate peak{moe}; the rest is our transfer, memory and CPU-Adam model (MFU "
                   f"{r['mfu_pct']}%, bubble {r['bubble_pct']}%)")
        if abs(r["measured_layers_ratio"] - 1) > EXPLAIN_RATIO:
            paper_iter = r["tokens_per_iteration"] / paper
            out.append(f"still x{r['measured_layers_ratio']} with the measured layer times: they add up to "
                       f"{r['measured_compute_per_gpu_s']} s of compute per GPU per call, while the paper's rate "
                       f"means {paper_iter:.1f} s per call, so the real run is bound outside the layers' compute; "
                       f"e.g. streaming the {r['weight_gb']} GB of weights up twice per call (forward, backward) in "
                       f"that time is {2 * r['weight_gb'] / paper_iter:.0f} GB/s, which our PCIe/DRAM model "
                       f"sustains faster; the 235B run's real host path (pinned or pageable buffers, NUMA) is not "
                       f"reported")
        out.append(f"round size: the library runs a call's {r['n_mb']} microbatches as one round; with the "
                   f"authors' simulator's rounds of 8 we would predict {r['rounds_of_n_tokens_per_s']:,} "
                   f"(x{r['rounds_of_n_tokens_per_s'] / paper:.2f})")
    elif abs(c["layer_ratio"] - 1) > EXPLAIN_RATIO:
        out.append(f"tokens/s within the goal, though our layers cost {c['layer_ratio']}x (bf16: "
                   f"{c['layer_ratio_bf16']}x) and our head "
                   f"{c['head_ratio']}x the measured times: with the measured times we would predict "
                   f"{r['measured_layers_tokens_per_s']:,} (x{r['measured_layers_ratio']})")
    if r["paper_max_seq"] and abs(r["max_seq"] / r["paper_max_seq"] - 1) > EXPLAIN_RATIO:
        peak, warm = r["peak_allocated_gib_at_paper_seq"], r["warmup_peak_gib_at_paper_seq"]
        out.append(f"max seq: at the paper's {r['paper_max_seq'] // 1024}K the library's first iterations hold "
                   f"{warm} GiB ({warm * ALLOCATOR_OVERHEAD:.1f} with the allocator margin) on their busiest "
                   f"forward stage and the steady plan {peak} GiB ({peak * ALLOCATOR_OVERHEAD:.1f}), against 24 GiB; "
                   "what else the library holds there is not found in its source (README e02)")
    if not r["feasible"]:
        out.append(f"feasibility: out of memory at {r['mb_size']} sequences/microbatch ({r['reason']}); it fits "
                   f"at {r['fit_mb_size']}")
    return out
