"""Per-kernel-family time and achieved bandwidth of one decoder layer in a torch-profiler trace of an rpexec
run (benchmarks/profile_run.py), against what rpsim's cost model prices: the figures behind
benchmarks/notes-strided.md.

    python3 benchmarks/trace_kernel_families.py experiments/data/profiles/llama-0.7b-gpipe-1gpu-torch-profiler.json.gz \
        --hidden 2048 --heads 16 --kv-heads 4 --head-dim 128 --mlp 5632 --tokens 8192 \
        --machine experiments/data/machines/h200x1.toml

Only the compute stream's kernels count. A layer's forward is the run of kernels from one SDPA forward to
the next within a forward sweep holding exactly the layer's 7 GEMMs (q, k, v, o, gate, up, down): the
second half of one layer and the first half of the next, which is one layer's kernels. A layer's backward
is the run from one SDPA backward to the next holding exactly 14 GEMMs (input and weight gradients of the
7). Kernels are named into families by their place around the attention kernel (profile_run.py records
no shapes for the lane threads' ops): between the v projection and SDPA forward sit RoPE (strided
multiplies, the adds, the concatenation) and the GQA repeat (strided copies); the strided copy right before
a GEMM is a layout copy (the attention output in forward, the q/k/v gradients in backward); between SDPA
backward and the first GEMM sit the GQA repeat's backward (reductions) and RoPE's backward.
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BF16 = 2
STRIDED_FAMILIES = ("rope", "gqa repeat", "layout copy")


def kernel_kind(name: str) -> str:
    """A short kind from a CUDA kernel's name: what it computes and whether torch vectorised it."""
    for key, kind in (("flash_fprop", "sdpa fwd"), ("flash_bprop", "sdpa bwd"), ("dot_do_o", "sdpa bwd"),
                      ("convert_dq", "sdpa bwd"), ("nvjet", "gemm"), ("CatArray", "cat"),
                      ("layer_norm_grad", "norm bwd"), ("GammaBeta", "norm bwd"), ("layer_norm_kernel", "norm"),
                      ("silu_backward", "silu bwd"), ("silu_kernel", "silu"), ("reduce_kernel", "reduce"),
                      ("bfloat16_copy", "narrow"), ("FillFunctor", "fill"), ("neg_kernel", "neg"),
                      ("CUDAFunctor_add", "add"), ("MulFunctor", "mul"), ("direct_copy", "copy")):
        if key in name:
            if kind == "copy":
                return "widen" if "unrolled_elementwise" in name else "strided copy"
            if kind == "mul" and "elementwise_kernel<128" in name:
                return "strided mul"
            return kind
    return "other"


def compute_stream_kernels(path: str) -> list[dict]:
    with gzip.open(path) if path.endswith(".gz") else open(path) as f:
        events = json.load(f)["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    by_stream: dict[int, int] = defaultdict(int)
    for e in kernels:
        by_stream[e["args"]["stream"]] += 1
    stream = max(by_stream, key=by_stream.__getitem__)
    out = sorted((e for e in kernels if e["args"]["stream"] == stream), key=lambda e: e["ts"])
    for e in out:
        e["kind"] = kernel_kind(e["name"])
    return out


def windows(kernels: list[dict], landmark: str, n_gemms: int) -> list[list[dict]]:
    """Runs of kernels from one `landmark` to the next holding exactly n_gemms GEMMs and no other
    landmark of attention (one layer's kernels, see the module docstring)."""
    marks = [i for i, e in enumerate(kernels) if e["kind"] == landmark and "flash" in e["name"]]
    out = []
    for a, b in pairwise(marks):
        run = kernels[a:b]
        kinds = [e["kind"] for e in run]
        n_flash = sum("flash" in e["name"] for e in run)  # the landmark only: no other layer's attention
        if kinds.count("gemm") == n_gemms and n_flash == 1 and "other" not in kinds:
            out.append(run)
    return out


def forward_family(run: list[dict], i: int) -> str:
    e = run[i]
    k = e["kind"]
    nxt = run[i + 1]["kind"] if i + 1 < len(run) else ""
    if k in ("sdpa fwd", "gemm"):
        return {"sdpa fwd": "attention", "gemm": "gemm"}[k]
    if k == "strided copy":
        return "layout copy" if nxt == "gemm" else "gqa repeat"
    if k in ("strided mul", "cat") or (k == "add" and i > 0 and run[i - 1]["kind"] == "strided mul"):
        return "rope"  # RoPE's subtract and add follow its strided multiplies
    if k in ("widen", "norm", "narrow"):
        return "norms"
    if k in ("silu", "mul"):
        return "swiglu"
    if k == "add":
        return "residual add"
    return "other elementwise"


def backward_family(run: list[dict], i: int) -> str:
    e = run[i]
    k = e["kind"]
    nxt = run[i + 1]["kind"] if i + 1 < len(run) else ""
    if k.startswith("sdpa"):
        return "attention"
    if k == "gemm":
        return "gemm"
    if k == "reduce":
        return "gqa repeat"
    if k == "strided copy":
        return "layout copy" if nxt == "gemm" else "rope"
    if k in ("strided mul", "neg", "fill") or (k == "add" and _after_attention_before_gemm(run, i)):
        return "rope"
    if k in ("widen", "norm bwd", "narrow"):
        return "norms"
    if k in ("silu bwd", "mul"):
        return "swiglu"
    if k == "add":
        return "residual and gradient adds"
    return "other elementwise"


def _after_attention_before_gemm(run: list[dict], i: int) -> bool:
    """True when kernel i follows the attention backward with no GEMM in between (a RoPE-backward add)."""
    for e in reversed(run[:i]):
        if e["kind"] == "gemm":
            return False
        if e["kind"].startswith("sdpa"):
            return True
    return False


def family_bytes(t: int, h: int, qw: int, kw: int, mlp: int) -> dict[str, dict[str, float]]:
    """Bytes each family's kernels move, read + written, counted from rpexec.model's layer (bf16, fp32 in
    the norms), for one layer's forward and backward: the kernels' own traffic ("kernels"), and what
    rpsim's cost model counts (rpsim.costs.layer_costs; backward priced as twice the forward bytes)."""
    half_q, half_k = t * qw // 2, t * kw // 2
    # forward RoPE per tensor: 4 multiplies (read a strided half, write a half), a subtract and an add of
    # halves (read 2, write 1), the concatenation (read both halves, write the whole)
    rope_fwd = BF16 * sum(4 * 2 * x + 2 * 3 * x + 4 * x for x in (half_q, half_k))
    # backward per tensor: 4 multiplies and a negation over halves, 2 adds of halves, two zero-fills of the
    # whole and two copies of a half into them (the slices' backward), one add of the wholes
    rope_bwd = BF16 * sum(4 * 2 * x + 2 * x + 2 * 3 * x + 2 * 2 * x + 2 * 2 * x + 3 * 2 * x for x in (half_q, half_k))
    gqa = BF16 * 2 * t * (kw + qw)  # k and v: read kv_width, write q_width (backward: the reduction back)
    layout_fwd = BF16 * 2 * t * qw  # the attention output made contiguous for o_proj
    layout_bwd = BF16 * 2 * t * (qw + 2 * kw)  # the q, k, v gradients made contiguous for their projections
    norms = 2 * t * h * (2 + 4 + 4 + 4 + 4 + 2)  # two RMSNorms: widen, fused norm, narrow
    # backward per norm: widen the gradient (2 + 4 B), the input gradient (read x and the gradient, write:
    # 12 B), the gain's gradient (read both: 8 B), narrow (4 + 2 B)
    norms_bwd = 2 * t * h * (6 + 12 + 8 + 6)
    residual = 2 * BF16 * 3 * t * h
    swiglu = BF16 * 5 * t * mlp
    swiglu_bwd = BF16 * 9 * t * mlp  # the product's two gradients and silu's, each read 2 write 1
    kernels = {
        "rope": (rope_fwd, rope_bwd), "gqa repeat": (gqa, gqa), "layout copy": (layout_fwd, layout_bwd),
        "norms": (norms, norms_bwd), "residual add": (residual, None), "swiglu": (swiglu, swiglu_bwd),
    }
    model = {  # rpsim.costs.layer_costs.elementwise_bytes, its terms
        "rope": BF16 * 9 * t * (qw + kw), "gqa repeat": BF16 * 2 * t * (kw + qw), "layout copy": BF16 * 2 * t * qw,
        "norms": norms, "residual add": residual, "swiglu": swiglu,
    }
    out = {f: {"kernels_fwd": kernels[f][0], "kernels_bwd": kernels[f][1], "model_fwd": model[f],
               "model_bwd": 2 * model[f]} for f in kernels}
    # backward adds: the residual branches' gradients summed, and rpexec's accumulation of weight gradients
    # over microbatches; the cost model counts twice the residual adds' bytes for them
    out["residual and gradient adds"] = {"kernels_fwd": None, "kernels_bwd": None, "model_fwd": residual,
                                         "model_bwd": 2 * residual}
    return out


def per_window_us(runs: list[list[dict]], classify) -> dict[str, float]:
    """Median over the windows of each family's summed kernel time, microseconds."""
    sums: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        acc: dict[str, float] = defaultdict(float)
        for i in range(len(run)):
            acc[classify(run, i)] += run[i]["dur"]
        for fam, v in acc.items():
            sums[fam].append(v)
    return {fam: statistics.median(v) for fam, v in sums.items()}


def predicted_layer_s(args: argparse.Namespace) -> dict[str, float]:
    """rpsim's times of the layer from the machine file: forward and backward in all, their GEMMs and
    attention; and the contiguous elementwise rate it prices the rest at."""
    from rpsim.catalog.servers import load_server
    from rpsim.costs import roofline
    from rpsim.costs.gemms import attention_flops, layer_gemms
    from rpsim.costs.layer_costs import transformer_layer_cost
    from rpsim.specs import ModelSpec, TrainingSpec
    gpu = load_server(args.machine).gpu
    m = ModelSpec(name="traced", n_layers=1, hidden=args.hidden, n_heads=args.heads, n_kv_heads=args.kv_heads,
                  head_dim=args.head_dim, mlp_width=args.mlp, vocab=32000)
    train = TrainingSpec(seq_len=args.seq, global_batch=args.tokens // args.seq, mb_size=args.tokens // args.seq,
                         precision="bf16")
    c = transformer_layer_cost(m, train, gpu, 0)
    gemms, attn = layer_gemms(m, train, 0), attention_flops(m, train)
    return {"fwd": c.forward_s, "bwd": c.backward_s, "rate": roofline.elementwise_bytes_per_s(gpu),
            "gemm fwd": sum(roofline.gemm_time_s(g, gpu, "bf16") for g in gemms),
            "gemm bwd": sum(roofline.gemm_backward_time_s(g, gpu, "bf16") for g in gemms),
            "attention fwd": roofline.attention_time_s(attn, gpu, "bf16", False),
            "attention bwd": roofline.attention_time_s(2 * attn, gpu, "bf16", True)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--mlp", type=int, default=5632)
    p.add_argument("--tokens", type=int, default=8192, help="tokens per microbatch")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--machine", default="experiments/data/machines/h200x1.toml")
    a = p.parse_args()
    kernels = compute_stream_kernels(a.trace)
    fwd_runs = windows(kernels, "sdpa fwd", 7)
    bwd_runs = windows(kernels, "sdpa bwd", 14)
    qw, kw = a.heads * a.head_dim, a.kv_heads * a.head_dim
    fam_bytes = family_bytes(a.tokens, a.hidden, qw, kw, a.mlp)
    pred = predicted_layer_s(a)
    rate = pred["rate"]
    total_us = sum(e["dur"] for e in kernels)
    strided_kinds = ("strided copy", "strided mul", "cat", "neg", "reduce")
    print(f"compute-stream kernel time {total_us / 1e3:.1f} ms; kinds torch did not vectorise or that copy "
          f"over strides (strided copies/multiplies, cat, neg, reductions): "
          f"{100 * sum(e['dur'] for e in kernels if e['kind'] in strided_kinds) / total_us:.1f}%; "
          f"fp32 widening copies (unrolled): {100 * sum(e['dur'] for e in kernels if e['kind'] == 'widen') / total_us:.1f}%")
    for label, runs, classify, side in (("forward", fwd_runs, forward_family, "fwd"),
                                        ("backward", bwd_runs, backward_family, "bwd")):
        pred_s = pred[side]
        fams = per_window_us(runs, classify)
        layer_us = statistics.median(sum(e["dur"] for e in run) for run in runs)
        span_us = statistics.median(run[-1]["ts"] + run[-1]["dur"] - run[0]["ts"] for run in runs)
        print(f"\n{label}: {len(runs)} layer windows; kernel time per layer {layer_us:.1f} us, span with the "
              f"gaps between kernels {span_us:.1f} us; rpsim predicts {pred_s * 1e6:.1f} us (kernels "
              f"{layer_us / (pred_s * 1e6):.3f}x, span {span_us / (pred_s * 1e6):.3f}x)")
        print(f"{'family':28s} {'us':>8s} {'kernel MB':>10s} {'GB/s':>7s} {'model MB':>9s} {'priced us':>10s} {'excess us':>10s}")
        excess_strided = strided_us = strided_model_bytes = 0.0
        for fam in sorted(fams, key=lambda f: -fams[f]):
            us = fams[fam]
            b = fam_bytes.get(fam)
            if fam in ("gemm", "attention"):
                priced_us = pred[f"{fam} {side}"] * 1e6
                print(f"{fam:28s} {us:8.1f} {'':10s} {'':7s} {'':9s} {priced_us:10.1f} {us - priced_us:10.1f}")
                continue
            if b is None:
                print(f"{fam:28s} {us:8.1f}")
                continue
            kb, mb = b[f"kernels_{side}"], b[f"model_{side}"]
            priced_us = mb / rate * 1e6
            if fam in STRIDED_FAMILIES:
                excess_strided += us - priced_us
                strided_us += us
                strided_model_bytes += mb
            print(f"{fam:28s} {us:8.1f} {(kb or float('nan')) / 1e6:10.1f} "
                  f"{(kb / (us * 1e-6) / 1e9 if kb else float('nan')):7.0f} {mb / 1e6:9.1f} {priced_us:10.1f} "
                  f"{us - priced_us:10.1f}")
        print(f"strided families: {excess_strided:.1f} us over their priced time = "
              f"{100 * excess_strided / (pred_s * 1e6):.1f}% of the predicted layer {label}; their rate in the "
              f"bytes rpsim counts (strided_elementwise_gb_per_s, {label}): "
              f"{strided_model_bytes / strided_us / 1e3:.1f} GB/s")


if __name__ == "__main__":
    main()
