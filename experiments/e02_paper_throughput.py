"""e02: the RoundPipe paper's 8x RTX 4090 throughput table, predicted from first principles.

`pcie` fidelity, no per-layer times given: every time comes from rpsim's cost model (FLOPs and bytes per
layer, roofline with an efficiency curve) on the `roundpipe-4090x8` server preset, fp16 with fp16
accumulation (roundpipe.md: "FP16 matmul accumulation enabled"), sequence 2048. Systems: RoundPipe and
RoundPipe-sync on the stages the `roundpipe` library's own partitioner picks (rpsim.partition.library_auto),
Megatron-style PP (1F1B, weights resident, fewer layers in the first and last stage) and a
Mobius-like PP + offload (GPipe or 1F1B, whichever is faster, weights streamed to each stage's fixed GPU).
Also the longest sequence each system fits (microbatches of one sequence).

Memory as the authors ran it (RoundPipe-artifact roundpipe/train.py and run.sh): Hugging Face layers with
FlashAttention-2 in fp16 (`layer_impl="hf-fa2"`), and for RoundPipe the library's chunked linear
cross-entropy (`return_logits=False`: 4096 tokens at a time, rpsim.costs.activations); the max-sequence
runs use recompute grain "layer" for 1.7B, 8B and 20B, "stage" for 32B.

    python3 experiments/e02_paper_throughput.py

Writes experiments/out/e02/{results.csv, throughput.png} and prints the summary table."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments._common import finish

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUT = ROOT / "experiments" / "out" / "e02"
SERVER, PRECISION, SEQ = "roundpipe-4090x8", "fp16-acc16", 2048
COLUMNS = ("model", "system", "tokens_per_s", "feasible", "max_seq")
SEQ_STEP = 1024  # max_seq resolution: powers of two, then bisection in 1K steps
SEQ_CAP = 128 * 1024
GOAL_RATIO = 0.25  # goal: within 25% of the paper's tokens/s
EXPLAIN_RATIO = 0.20  # explain every difference over 20%

# roundpipe.md, "The paper's evaluation setup": (global batch, microbatches per call, calls per optimizer step).
RUNS = {
    "qwen3-1.7b": (512, 10, 4),
    "llama3-8b": (256, 10, 2),
    "gpt-oss-20b": (128, 16, 1),
    "qwen3-32b": (128, 10, 2),
    "qwen3-235b-a22b": (64, 10, 1),
}
LORA = {"qwen3-235b-a22b"}  # roundpipe.md: LoRA r=32 on all linear layers, LM head frozen
MOE = {"gpt-oss-20b", "qwen3-235b-a22b"}
# The paper's measured RoundPipe figures on 8x RTX 4090, from the roundpipe 0.1.1 README on PyPI (which
# reports the paper's benchmarks; quoted in issue 9). GPT-OSS-20B is not listed there.
PAPER_TOKENS_PER_S = {"qwen3-1.7b": 65_417, "llama3-8b": 24_275, "qwen3-32b": 5_516, "qwen3-235b-a22b": 1_820}
PAPER_MAX_SEQ_K = {"qwen3-1.7b": 73, "llama3-8b": 49, "qwen3-32b": 28, "qwen3-235b-a22b": 31}
PAPER_FSDP_OFFLOAD = {"qwen3-1.7b": 35_074, "llama3-8b": 4_071}  # same README, FSDP with CPU offload
# system -> candidate (schedule, PlanRequest keyword arguments); the fastest feasible candidate is reported.
# RoundPipe as the paper's runs ran it, with the `roundpipe` library's own partitioner
# (rpsim.partition.library_auto) on the layer times its timer measures, here the cost model's.
SYSTEMS = {
    "roundpipe": [("roundpipe", {"partitioner": "roundpipe-library"})],
    "roundpipe-sync": [("roundpipe-sync", {"partitioner": "roundpipe-library"})],
    "megatron-pp": [("1f1b", {"weights": "resident", "partitioner": "uneven"})],
    "mobius": [("gpipe", {"weights": "stream"}), ("1f1b", {"weights": "stream"})],
}


def mb_size(name: str) -> int:
    """One simulated iteration = one forward_backward call of M microbatches, so global batch = M x mb_size
    with mb_size = the paper's global batch / (calls x M), rounded (1.7B: 512 / (4 x 10) = 12.8 -> 13)."""
    g, m, calls = RUNS[name]
    return max(1, round(g / (calls * m)))


# RoundPipe-artifact roundpipe/run.sh, the 4090 max-sequence runs' recompute_grain argument.
MAX_SEQ_RECOMPUTE = {"qwen3-1.7b": "layer", "llama3-8b": "layer", "gpt-oss-20b": "layer", "qwen3-32b": "stage",
                     "qwen3-235b-a22b": "stage"}
# The same runs' microbatches per call, each of one sequence (batch size = microbatches there; train_lora.py
# for 235B). The host keeps every microbatch's saved boundaries, so with 10 the 32B run is host-bound.
MAX_SEQ_MICROBATCHES = {"qwen3-1.7b": 10, "llama3-8b": 10, "gpt-oss-20b": 1, "qwen3-32b": 1, "qwen3-235b-a22b": 4}


def training(name: str, seq: int, mb: int, system: str = "roundpipe", recompute: str = "stage",
             n_mb: int | None = None):
    """The baselines compute the full logits; RoundPipe runs the library's chunked loss. n_mb: microbatches
    per call (default the throughput run's)."""
    from rpsim.costs.activations import LIBRARY_LOSS_CHUNK_TOKENS
    from rpsim.specs import TrainingSpec
    m = n_mb or RUNS[name][1]
    chunk = LIBRARY_LOSS_CHUNK_TOKENS if system.startswith("roundpipe") else 0
    return TrainingSpec(seq_len=seq, global_batch=m * mb, mb_size=mb, precision=PRECISION,
                        mode="lora" if name in LORA else "full", lora_rank=32, recompute=recompute,
                        layer_impl="hf-fa2", loss_chunk_tokens=chunk)


def scenario(name: str, seq: int, mb: int, measured_layers: bool = False, system: str = "roundpipe",
             recompute: str = "stage", n_mb: int | None = None):
    """The first-principles scenario; with measured_layers, the authors' RTX 4090 per-layer times
    (roundpipe.md, the profile e01 builds) replace the cost model's, scaled linearly to our tokens."""
    from dataclasses import replace

    from rpsim.scenario import make_scenario
    sc = make_scenario(name, SERVER, training(name, seq, mb, system, recompute, n_mb))
    if not measured_layers:
        return sc
    from e01_paper_ablation import paper_profile

    from rpsim.costs.profile import profile_from_dict
    prof = profile_from_dict(paper_profile(name, sc.model.n_layers), source=f"roundpipe.md:{name}")
    return replace(sc, costs=prof.apply(sc.costs), profile=prof)


def simulate(name: str, seq: int, mb: int, system: str, rounds_of_n: bool = False,
             measured_layers: bool = False, recompute: str = "stage", n_mb: int | None = None) -> dict:
    """The system's fastest candidate: feasible ones first, then tokens/s. RoundPipe dispatches each stage
    for all M microbatches of a forward_backward call (the library's RoundPipe.forward_backward launches
    one job per layer group over the whole batch: ITcarrot/RoundPipe, RoundPipe/RoundPipe.py), so one call
    is one round of M_R = M >= N; rounds_of_n uses rpsim's default M_R = N (the authors' simulator)."""
    from rpsim.compare import run_one
    from rpsim.planner import PlanRequest
    sc = scenario(name, seq, mb, measured_layers, system, recompute, n_mb)
    best = None
    for schedule, kw in SYSTEMS[system]:
        if schedule.startswith("roundpipe") and not rounds_of_n:
            kw = {**kw, "round_size": n_mb or RUNS[name][1]}
        row = run_one(sc, PlanRequest(schedule, **kw))
        m = {**row.metrics, "schedule": schedule, "tokens_per_s": row.metrics["tokens_per_s"] or 0.0,
             "bubble": steady_bubble(row.result) if row.result else None,
             "compute_per_gpu_s": compute_per_gpu_s(row.result) if row.result else None}
        if best is None or (m["feasible"], m["tokens_per_s"]) > (best["feasible"], best["tokens_per_s"]):
            best = m
    return best


def compute_per_gpu_s(result) -> float:
    """GPU compute time per iteration, averaged over the GPUs."""
    busy = sum(e.end_s - e.start_s for e in result.trace.events if e.lane == "compute" and e.gpu >= 0)
    return busy / result.plan.n_iters / result.plan.n_gpus


def steady_bubble(result) -> float:
    """1 - compute time per iteration / (GPUs x iteration time). The same as metrics['bubble'] for flushed
    schedules; for async RoundPipe the metrics' window runs to the last iteration's end and counts its
    drain as idle (see e01), so we take the compute per iteration instead."""
    return 1 - compute_per_gpu_s(result) / result.metrics["iteration_s"]


def fits(name: str, seq: int, system: str) -> bool:
    """RoundPipe as the paper's max-sequence runs ran it: the artifact's recompute grain, and the library's
    partitioner (candidate stage times within 1.1x the slowest layer: at long sequences a backward stage
    of one attention-heavy layer, where the paper's variant merges several and their recompute needs
    several layers' activations at once), and its microbatches per call; and the library's first
    iterations, planned before any time is measured, must fit as well (warmup_peak_bytes)."""
    if not system.startswith("roundpipe"):
        return bool(simulate(name, seq, 1, system)["feasible"])
    recompute, n_mb = MAX_SEQ_RECOMPUTE[name], MAX_SEQ_MICROBATCHES[name]
    if not warmup_fits(name, seq, 1, recompute, n_mb):
        return False
    return bool(simulate(name, seq, 1, system, recompute=recompute, n_mb=n_mb)["feasible"])


def warmup_peak_bytes(name: str, seq: int, mb: int, recompute: str, n_mb: int) -> float:
    """The busiest forward stage of the library's first iterations: the partition it plans from layer
    sizes before its timer has a measurement (rpsim.partition.library_auto; 1.7B: forward stages of 10
    layers plus the embedding and of 18 layers), run as the library runs a forward (grad enabled, the
    inputs saved for the recompute held until the next microbatch's download: rpsim.costs.library_memory)."""
    from rpsim.costs.library_memory import library_forward_peak_bytes
    from rpsim.partition.library_auto import library_warmup_partition
    sc = scenario(name, seq, mb, recompute=recompute, n_mb=n_mb)
    layers = sc.costs.layers
    part = library_warmup_partition([x.weight_bytes for x in layers], [x.grad_bytes for x in layers],
                                    sc.server.n_gpus, sc.server.gpu.memory_bytes)
    return library_forward_peak_bytes(layers, part, recompute, n_mb)


def warmup_fits(name: str, seq: int, mb: int, recompute: str, n_mb: int) -> bool:
    """Whether that peak fits the GPU with the simulator's allocator margin, as its feasibility does."""
    from rpsim.catalog import load_server
    from rpsim.sim.memory import ALLOCATOR_OVERHEAD
    limit_bytes = load_server(SERVER).gpu.memory_bytes
    return warmup_peak_bytes(name, seq, mb, recompute, n_mb) * ALLOCATOR_OVERHEAD <= limit_bytes


def peak_allocated_gib(name: str, seq: int) -> float:
    """RoundPipe's busiest GPU at one sequence of `seq` tokens, run as fits() runs it: live tensor bytes,
    before the allocator margin."""
    m = simulate(name, seq, 1, "roundpipe", recompute=MAX_SEQ_RECOMPUTE[name], n_mb=MAX_SEQ_MICROBATCHES[name])
    return round(max(m["peak_gpu_allocated_bytes"] or [0.0]) / 2**30, 1)


def max_seq(name: str, system: str) -> tuple[int, bool]:
    """(longest sequence that fits with microbatches of one sequence, whether feasibility was monotone).
    Powers of two from 1K until two in a row fail (a partition chosen for one length can miss by a few
    hundred MB where a longer one fits), then bisection to 1K above the largest that fits."""
    ok = {}
    seq, misses = SEQ_STEP, 0
    while seq <= SEQ_CAP and misses < 2:
        ok[seq] = fits(name, seq, system)
        misses = 0 if ok[seq] else misses + 1
        seq *= 2
    good = [s for s, f in ok.items() if f]
    if not good:
        return 0, True
    lo = max(good)
    monotone = all(f for s, f in ok.items() if s < lo)
    hi = 2 * lo
    if hi > SEQ_CAP:
        return lo, monotone
    while hi - lo > SEQ_STEP:
        mid = (lo + hi) // 2 // SEQ_STEP * SEQ_STEP
        lo, hi = (mid, hi) if fits(name, mid, system) else (lo, mid)
    return lo, monotone


def largest_fit(name: str, system: str, mb: int) -> tuple[int, float]:
    """(mb_size, tokens/s) of the largest microbatch up to the paper's that fits, halving; (0, 0) if none."""
    while mb >= 1:
        m = simulate(name, SEQ, mb, system)
        if m["feasible"]:
            return mb, m["tokens_per_s"]
        mb = mb // 2 if mb > 1 else 0
    return 0, 0.0


def head_bytes(name: str, seq: int) -> float:
    """The head's working set for one sequence as RoundPipe runs it (the library's chunked loss)."""
    from rpsim.catalog import load_model, load_server
    from rpsim.costs import model_costs
    return model_costs(load_model(name), training(name, seq, 1), load_server(SERVER).gpu).layers[-1].activation_bytes


def cost_check() -> list[dict]:
    """Our cost model's per-layer and head times at the paper's 4 x 2048 tokens, against the times the
    authors measured on an RTX 4090 (roundpipe.md table, as in e01): where our layers run faster or our
    head slower than measured, tokens/s moves with them. The head is priced as e02's RoundPipe runs it,
    the library's chunked loss (rpsim.costs.library_loss); the authors timed theirs with the library's
    unchunked compiled loss (RoundPipe-artifact roundpipe-timing/train.py leaves `return_logits` at its
    default), the same GEMMs and per-logit kernels without the chunks' gradient accumulation."""
    from e01_paper_ablation import PAPER_TIMES_MS

    from rpsim.catalog import load_model, load_server
    from rpsim.costs import model_costs
    from rpsim.costs.activations import LIBRARY_LOSS_CHUNK_TOKENS
    from rpsim.specs import TrainingSpec

    def layers(name: str, precision: str):
        t = TrainingSpec(seq_len=2048, global_batch=4, mb_size=4, precision=precision,
                         mode="lora" if name in LORA else "full", lora_rank=32, layer_impl="hf-fa2",
                         loss_chunk_tokens=LIBRARY_LOSS_CHUNK_TOKENS)
        return model_costs(load_model(name), t, load_server(SERVER).gpu).layers

    def layer_ms(x) -> float:  # forward + recompute + backward
        return 1e3 * (2 * x.forward_s + x.backward_s)

    out = []
    for name, (_, fwd, bwd, head_f, head_b, _) in PAPER_TIMES_MS.items():
        ours, bf16 = layers(name, PRECISION), layers(name, "bf16")
        ours_head = 1e3 * (ours[-1].forward_s + ours[-1].backward_s)  # the fused head: forward + backward
        paper_layer = 2 * fwd + bwd
        out.append({"model": name, "layer_ms": round(layer_ms(ours[1]), 1), "paper_layer_ms": round(paper_layer, 1),
                    "layer_ratio": round(layer_ms(ours[1]) / paper_layer, 2),
                    "layer_ratio_bf16": round(layer_ms(bf16[1]) / paper_layer, 2), "head_ms": round(ours_head, 1),
                    "paper_head_ms": round(head_f + head_b, 1), "head_ratio": round(ours_head / (head_f + head_b), 2)})
    return out


def run_all() -> list[dict]:
    rows = []
    for name in RUNS:
        mb = mb_size(name)
        for system in SYSTEMS:
            t0 = time.perf_counter()
            m = simulate(name, SEQ, mb, system)
            fit_mb, fit_tps = (mb, m["tokens_per_s"]) if m["feasible"] else largest_fit(name, system, mb // 2)
            longest, monotone = max_seq(name, system)
            paper = PAPER_TOKENS_PER_S.get(name) if system == "roundpipe" else None
            paper_seq = PAPER_MAX_SEQ_K.get(name) if system == "roundpipe" else None
            # Diagnostics for the RoundPipe rows: the authors' simulator's rounds of N, and our transfer and
            # memory model driven by the measured layer times instead of the cost model's.
            alt = rp_alt = measured_compute = measured_fits = measured_peak = ""
            if system.startswith("roundpipe"):
                alt = round(simulate(name, SEQ, mb, system, rounds_of_n=True)["tokens_per_s"])
                measured = simulate(name, SEQ, mb, system, measured_layers=True)
                rp_alt, measured_compute = round(measured["tokens_per_s"]), round(measured["compute_per_gpu_s"], 2)
                # The library partitions with the layer times it measures (SYSTEMS): with the authors'
                # times its backward stages hold 1-3 layers (1.7B: 1 and 3; 8B: 2; 20B, 32B, 235B: 1); with
                # the cost model's, 1.7B: 4, 8B: 2, 20B: 1-2, 32B and 235B: 1 (with rpexec's loss, 8B's
                # held 7-8, whose recompute needed 26.2 GiB).
                measured_fits = bool(measured["feasible"])
                measured_peak = round(max(measured["peak_gpu_mem_bytes"]) / 2**30, 1)
            rows.append({
                "model": name, "system": system, "tokens_per_s": round(m["tokens_per_s"]),
                "feasible": bool(m["feasible"]), "max_seq": longest,
                "paper_tokens_per_s": paper or "", "ratio": round(m["tokens_per_s"] / paper, 3) if paper else "",
                "paper_max_seq": paper_seq * 1024 if paper_seq else "", "schedule": m["schedule"],
                "mb_size": mb, "n_mb": RUNS[name][1], "mfu_pct": round(100 * (m["mfu"] or 0.0), 1),
                "bubble_pct": round(100 * (m["bubble"] or 0.0), 1),
                "peak_gpu_gib": round(max(m["peak_gpu_mem_bytes"] or [0]) / 2**30, 1),
                "fit_mb_size": fit_mb, "fit_tokens_per_s": round(fit_tps), "max_seq_monotone": monotone,
                "head_act_gib_at_paper_seq": round(head_bytes(name, paper_seq * 1024) / 2**30, 1) if paper_seq else "",
                "peak_allocated_gib_at_paper_seq": peak_allocated_gib(name, paper_seq * 1024) if paper_seq else "",
                "warmup_peak_gib_at_paper_seq": round(warmup_peak_bytes(
                    name, paper_seq * 1024, 1, MAX_SEQ_RECOMPUTE[name], MAX_SEQ_MICROBATCHES[name]) / 2**30, 1)
                if paper_seq else "",
                "rounds_of_n_tokens_per_s": alt, "measured_layers_tokens_per_s": rp_alt,
                "measured_layers_ratio": round(rp_alt / paper, 3) if paper else "",
                "measured_compute_per_gpu_s": measured_compute, "measured_layers_feasible": measured_fits,
                "measured_layers_peak_gpu_gib": measured_peak, "iteration_s": round(m["iteration_s"] or 0.0, 2),
                "tokens_per_iteration": training(name, SEQ, mb, system).tokens_per_iteration,
                "weight_gb": round(sum(x.weight_bytes for x in scenario(name, SEQ, mb).costs.layers) / 1e9, 1),
                "reason": m["reason"]})
            print(f"  {name} {system}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def figure(rows: list[dict], path: Path | None = None) -> Figure:
    """e02's bar chart (experiments/e02_figure.py) with this experiment's paper figures and setup."""
    from experiments.e02_figure import throughput_figure
    from rpsim.catalog.servers import load_server
    from rpsim.plot.titles import device_title
    title = (f"e02: {device_title(load_server(SERVER))} ({SERVER}), {PRECISION}, seq {SEQ}, pcie fidelity, "
             "the paper's microbatches")
    return throughput_figure(rows, PAPER_TOKENS_PER_S, title, path or OUT / "throughput.png")


def main() -> None:
    t0 = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    from experiments.e02_report import report  # it reads this module's paper figures and goals
    rows = run_all()
    figure(rows)
    report(rows, cost_check())
    finish(OUT, ROOT, rows, "throughput.png", t0)


if __name__ == "__main__":
    main()
