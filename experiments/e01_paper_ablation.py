"""e01: the RoundPipe paper's schedule-simulation ablation, replayed at `hop` fidelity.

8 GPUs, 16 microbatches, the authors' per-layer times (shared/reference/roundpipe.md, "Per-layer inputs
the authors measured on an RTX 4090 at 4 x 2048 tokens per microbatch") as a profile per model, a fixed
`comm` per cross-GPU dependency. Baselines: GPipe and 1F1B on 8 stages (an even split), interleaved 1F1B
and looped BFS on N*V virtual stages (V from roundpipe.md); RoundPipe on the paper's partitions. The
paper's figure is not given as numbers, so each bubble is set against the closed form the paper gives,
and the gap is split into stage imbalance, pipeline dynamics and hop cost (ideal-fidelity reruns).

    python3 experiments/e01_paper_ablation.py

Writes experiments/out/e01/{results.csv, details.csv, bubbles.png} and prints the summary table."""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments._common import write_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUT = ROOT / "experiments" / "out" / "e01"
N_GPUS, N_MB, MB_SIZE, SEQ = 8, 16, 4, 2048  # roundpipe.md: "Setting: 8 GPUs, 16 microbatches"; 4 x 2048 tokens
# Async RoundPipe: 2 warm-up iterations, a window of 8 (a multiple of any dispatch rotation period over 8
# GPUs: job k runs on GPU k mod N), then 2 more so that the window's tail is filled by later work.
ASYNC_WARMUP, ASYNC_WINDOW = 2, 8
ASYNC_ITERS = ASYNC_WARMUP + ASYNC_WINDOW + 2
SCHEDULES = ("gpipe", "1f1b", "interleaved", "looped-bfs", "roundpipe-sync", "roundpipe")
COLUMNS = ("model", "schedule", "bubble_pct", "makespan_ms", "fill_pct", "drain_pct", "switch_pct", "intra_pct")
WITHIN_PTS = 1.5  # the goal: within 1.5 points of the paper (here: of its closed forms)

# roundpipe.md per-layer table (ms): layers, fwd/layer, bwd/layer (no recompute), head fwd, head bwd, comm/hop.
# Preset layer counts must match: qwen3-1.7b 28, llama3-8b 32, gpt-oss-20b 24, qwen3-32b 64, qwen3-235b 94.
PAPER_TIMES_MS = {
    "qwen3-1.7b": (28, 7.429, 15.831, 22.0655, 43.707, 1.6),
    "llama3-8b": (32, 18.5037, 41.2066, 37.2255, 74.501, 3.2),
    "gpt-oss-20b": (24, 21.6446, 81.7809, 44.2925, 86.264, 2.25),
    "qwen3-32b": (64, 40.5611, 91.1743, 54.928, 108.294, 4.0),
    "qwen3-235b-a22b": (94, 43.016, 58.376, 42.444, 43.294, 3.2),
}
VIRTUAL_STAGES = {"qwen3-1.7b": 3, "llama3-8b": 4, "gpt-oss-20b": 3, "qwen3-32b": 8, "qwen3-235b-a22b": 12}
# roundpipe.md RoundPipe partitions: forward counts | backward counts in execution order (first = fused).
PAPER_PARTITIONS = {
    "qwen3-1.7b": ([7] * 4, [0] + [3] * 8 + [2, 2]),
    "llama3-8b": ([5, 5, 5, 5, 6, 6], [0] + [2] * 16),
    "gpt-oss-20b": ([4, 5, 5, 5, 5], [0] + [1] * 24),
    "qwen3-32b": ([2, 2] + [3] * 20, [0] + [1] * 64),
    "qwen3-235b-a22b": ([2] * 47, [0] + [1] * 94),
}
LORA = {"qwen3-235b-a22b"}  # roundpipe.md: Qwen3-235B-A22B is fine-tuned with LoRA r=32


def paper_profile(name: str, n_layers: int, plain_head: bool = False) -> dict:
    """roundpipe.md's row as a profile.json dict: embedding 0, every layer the same, head, hop_s = comm.
    With plain_head the head costs one transformer layer: the same pipeline without the LM head's weight."""
    layers, fwd, bwd, head_f, head_b, hop = PAPER_TIMES_MS[name]
    if plain_head:
        head_f, head_b = fwd, bwd
    if layers != n_layers:
        raise SystemExit(f"{name}: the preset has {n_layers} layers, the paper's table {layers}")
    ms = 1e-3
    rows = [{"name": "embed", "forward_s": 0.0, "backward_s": 0.0}]
    rows += [{"name": f"layer.{i}", "forward_s": fwd * ms, "backward_s": bwd * ms} for i in range(layers)]
    rows.append({"name": "head", "forward_s": head_f * ms, "backward_s": head_b * ms})
    return {"format": "rpsim.profile", "version": 1,
            "conditions": {"device": "RTX 4090", "mb_tokens": MB_SIZE * SEQ, "notes": "roundpipe.md table"},
            "layers": rows, "links": {"hop_s": hop * ms}}


def scenario(name: str, plain_head: bool = False):
    from rpsim.catalog import load_model
    from rpsim.costs.profile import profile_from_dict
    from rpsim.scenario import make_scenario
    from rpsim.specs import TrainingSpec
    # Recompute "stage": every non-fused backward is recompute + backward of each layer, the paper
    # simulator's baseline rule; at hop fidelity the saved-input granularity changes no time.
    t = TrainingSpec(seq_len=SEQ, global_batch=N_MB * MB_SIZE, mb_size=MB_SIZE, recompute="stage",
                     mode="lora" if name in LORA else "full", lora_rank=32)
    sc = make_scenario(name, f"4090x{N_GPUS}", t)
    prof = profile_from_dict(paper_profile(name, load_model(name).n_layers, plain_head),
                             source=f"roundpipe.md:{name}")
    return replace(sc, costs=prof.apply(sc.costs), profile=prof)


def even_spec(n_layers: int, n_stages: int) -> tuple[str, str]:
    """An even split as a --partition spec, and how it was made. With more stages than transformer layers
    (235B: 94 layers, 8 x 12 = 96 stages) the embedding and the head become stages of their own."""
    from rpsim.partition import even_counts
    if n_stages <= n_layers:
        counts = even_counts(n_layers, n_stages)
        how = "even" if n_layers % n_stages == 0 else f"nearest even ({min(counts)}-{max(counts)} layers/stage)"
        return ",".join(map(str, counts)), how
    short = n_stages - n_layers
    if short > 2:
        raise SystemExit(f"cannot split {n_layers} layers + embedding + head into {n_stages} stages")
    counts = [0] * (short == 2) + [1] * n_layers + [0]
    return ",".join(map(str, counts)), "one layer per stage, embedding and head alone"


def roundpipe_spec(name: str) -> str:
    fwd, bwd = PAPER_PARTITIONS[name]
    return ",".join(map(str, fwd)) + "|" + ",".join(map(str, bwd))


def requests(name: str, n_layers: int):
    """(PlanRequest, note) per row: the six schedules, then RoundPipe under the authors' g0 rule."""
    from rpsim.planner import PlanRequest
    v = VIRTUAL_STAGES[name]
    flat, flat_how = even_spec(n_layers, N_GPUS)
    virt, virt_how = even_spec(n_layers, N_GPUS * v)
    rp = roundpipe_spec(name)
    out = [(PlanRequest("gpipe", "hop", flat), f"{N_GPUS} stages, {flat_how}"),
           (PlanRequest("1f1b", "hop", flat), f"{N_GPUS} stages, {flat_how}"),
           (PlanRequest("interleaved", "hop", virt, virtual_stages=v), f"V={v}, {virt_how}"),
           (PlanRequest("looped-bfs", "hop", virt, virtual_stages=v), f"V={v}, {virt_how}")]
    for rule in ("paper", "earliest-free"):
        out += [(PlanRequest("roundpipe-sync", "hop", rp, g0_rule=rule), "paper partition"),
                (PlanRequest("roundpipe", "hop", rp, g0_rule=rule, n_iters=ASYNC_ITERS), "paper partition")]
    return out


def n_slots(plan) -> int:
    """Stage slots S per microbatch: a fixed-placement stage runs its forward and backward on one GPU (one
    slot); RoundPipe's forward and backward stages are separate slots."""
    p = plan.partition
    return len(p.bwd) if p.symmetric else len(p.fwd) + len(p.bwd)


def closed_form(plan, is_async: bool) -> float:
    """The paper's bubble with equal slots: useful M*S*t, fill+drain N(N-1)*t, bubble = N(N-1)/(M*S + N(N-1));
    for GPipe/1F1B (S = p = N) that is (p-1)/(m+p-1), for looped schedules S = N*V. Async RoundPipe hides
    fill and drain in the neighbouring iterations: 0."""
    n, m, s = plan.n_gpus, plan.n_mb, n_slots(plan)
    ramp = 0 if is_async else n * (n - 1)
    return ramp / (m * s + ramp)


def steady_bubbles(result) -> dict[str, float]:
    """Async RoundPipe: bubbles over the steady window only, with later iterations filling its tail. The
    library's window runs to the last iteration's end, which counts that iteration's drain as idle."""
    from rpsim.metrics.bubbles import bubble_breakdown
    ends: dict[int, float] = {}
    for e in result.trace.events:
        if e.lane == "compute":
            ends[e.it] = max(ends.get(e.it, 0.0), e.end_s)
    lo, hi = ends[ASYNC_WARMUP], ends[ASYNC_WARMUP + ASYNC_WINDOW]
    b = bubble_breakdown(result.trace, result.plan.n_gpus, lo, hi, steady=True)
    return {"bubble": b.bubble, "bubble_fill": b.fill, "bubble_drain": b.drain, "bubble_switch": b.switch,
            "bubble_intra": b.intra, "iteration_s": (hi - lo) / ASYNC_WINDOW}


def bubble_of(sc, req) -> tuple[dict, object]:
    """(bubble metrics, plan); async RoundPipe over its steady-state window."""
    from rpsim.planner import make_plan
    from rpsim.sim.simulate import simulate
    plan = make_plan(sc, req)
    res = simulate(plan, sc, stop_at_steady=False)  # its own fixed window needs every iteration
    if req.schedule != "roundpipe":
        return res.metrics, plan
    m = steady_bubbles(res)
    if abs(m["iteration_s"] / res.metrics["iteration_s"] - 1) > 1e-2:
        print(f"warning: steady window {m['iteration_s']:.4f} s vs metrics {res.metrics['iteration_s']:.4f} s",
              file=sys.stderr)
    return m, plan


def run_one(sc, plain, req) -> dict:
    """The hop run, plus two ideal-fidelity (compute-only) reruns that split its gap to the closed form:
    with the head costing one plain layer (what remains is the uneven split and pipeline dynamics), with the
    real head (adds the LM head's imbalance); the hop run adds the per-hop comm time."""
    m, plan = bubble_of(sc, req)
    ideal_plain, _ = bubble_of(plain, replace(req, fidelity="ideal"))
    ideal, _ = bubble_of(sc, replace(req, fidelity="ideal"))
    return {"bubble": m["bubble"], "iteration_s": m["iteration_s"], **{k: m[f"bubble_{k}"] for k in
            ("fill", "drain", "switch", "intra")}, "closed": closed_form(plan, req.schedule == "roundpipe"),
            "ideal_plain": ideal_plain["bubble"], "ideal": ideal["bubble"], "n_slots": n_slots(plan)}


def simulate_all() -> list[dict]:
    """One detail row per (model, request): the result columns plus the closed forms and the gap split."""
    details = []
    for name in PAPER_TIMES_MS:
        sc, plain = scenario(name), scenario(name, plain_head=True)
        for req, note in requests(name, sc.model.n_layers):
            t0 = time.perf_counter()
            r = run_one(sc, plain, req)
            details.append({"model": name, "schedule": req.schedule, "g0_rule": req.g0_rule, "split": note,
                            "slots": r["n_slots"], "bubble_pct": round(100 * r["bubble"], 2),
                            "makespan_ms": round(1e3 * r["iteration_s"], 1),
                            **{f"{k}_pct": round(100 * r[k], 2) for k in ("fill", "drain", "switch", "intra")},
                            "closed_form_pct": round(100 * r["closed"], 2),
                            "ideal_plain_head_pct": round(100 * r["ideal_plain"], 2),
                            "ideal_sim_pct": round(100 * r["ideal"], 2),
                            "stages_pts": round(100 * (r["ideal_plain"] - r["closed"]), 2),
                            "head_pts": round(100 * (r["ideal"] - r["ideal_plain"]), 2),
                            "hop_pts": round(100 * (r["bubble"] - r["ideal"]), 2),
                            "diff_pts": round(100 * (r["bubble"] - r["closed"]), 2)})
            print(f"  {name} {req.schedule} ({req.g0_rule}): {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return details


def result_rows(details: list[dict]) -> list[dict]:
    """results.csv: exactly COLUMNS, the paper's g0 rule (the earliest-free rows are in details.csv)."""
    return [{k: d[k] for k in COLUMNS} for d in details if d["g0_rule"] == "paper"]


def figure(rows: list[dict], details: list[dict], path: Path | None = None) -> Figure:
    """Stacked bubble parts per schedule, one panel per model, the closed forms as black ticks; the legend
    sits above the panels, clear of every bar."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from rpsim.plot.style import PAGE_IN, paper_rc
    models = list(dict.fromkeys(r["model"] for r in rows))
    closed = {(d["model"], d["schedule"]): d["closed_form_pct"] for d in details if d["g0_rule"] == "paper"}
    parts = (("fill_pct", "fill", "#9ecae1"), ("drain_pct", "drain", "#3182bd"),
             ("switch_pct", "switch", "#fdae6b"), ("intra_pct", "intra", "#e6550d"))
    with rc_context(paper_rc()):
        fig = Figure(figsize=(PAGE_IN, 2.5), layout="constrained")
        axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
        for ax, name in zip(axes, models, strict=True):
            mine = [r for r in rows if r["model"] == name]
            x = range(len(mine))
            bottom = [0.0] * len(mine)
            for key, _label, colour in parts:
                vals = [r[key] for r in mine]
                ax.bar(x, vals, bottom=bottom, color=colour, width=0.7)
                bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
            ax.scatter(x, [closed[(name, r["schedule"])] for r in mine], marker="_", s=120, color="k", zorder=3)
            ax.set_xticks(list(x), [r["schedule"].replace("roundpipe", "rp") for r in mine], rotation=90)
            ax.set_title(name)
        axes[0].set_ylabel("bubble (% of GPU time)")
        handles = [Patch(color=c, label=label) for _k, label, c in parts]
        handles.append(Line2D([], [], color="k", marker="_", linestyle="none", markersize=9, label="closed form"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
        fig.suptitle(f"e01: hop-fidelity ablation on {N_GPUS}x RTX 4090, {N_MB} microbatches, the paper's "
                     "per-layer times (rp = roundpipe)")
        fig.savefig(path or OUT / "bubbles.png")
    return fig


def report(details: list[dict]) -> None:
    from rpsim.report.table import format_table
    keys = ("model", "schedule", "g0_rule", "split", "bubble_pct", "makespan_ms", "fill_pct", "drain_pct",
            "switch_pct", "intra_pct", "closed_form_pct", "diff_pts", "stages_pts", "head_pts", "hop_pts")
    heads = ["model", "schedule", "split", "bubble%", "makespan_ms", "fill", "drain", "switch", "intra",
             "closed%", "gap", "=stages", "+head", "+hop"]
    paper = [d for d in details if d["g0_rule"] == "paper"]
    shown = [[int(d[k]) if k == "makespan_ms" else d[k] for k in keys if k != "g0_rule"] for d in paper]
    print(format_table(heads, shown))
    ok = [f"{d['model']}/{d['schedule']}" for d in paper if abs(d["diff_pts"]) <= WITHIN_PTS]
    print(f"\nwithin {WITHIN_PTS} points of the closed form: {len(ok)} of {len(paper)} rows ({', '.join(ok) or 'none'})")
    print("gap (points) = stages (compute-only sim, head as a plain layer - closed form: uneven split, dynamics)"
          "\n  + head (compute-only sim with the real LM head - the plain-head one) + hop (hop sim - compute-only "
          "sim); medians over models:")
    for s in SCHEDULES:
        mine = [d for d in paper if d["schedule"] == s]
        med = {k: statistics.median(d[k] for d in mine) for k in ("diff_pts", "stages_pts", "head_pts", "hop_pts")}
        print(f"  {s:15s} gap {med['diff_pts']:+6.2f} = stages {med['stages_pts']:+6.2f} "
              f"+ head {med['head_pts']:+6.2f} + hop {med['hop_pts']:+6.2f}")
    other = {(d["model"], d["schedule"]): d for d in details if d["g0_rule"] == "earliest-free"}
    pairs = [(d, other[(d["model"], d["schedule"])]) for d in paper if (d["model"], d["schedule"]) in other]
    print("RoundPipe g0 rule, paper -> earliest-free (authors' simulator): bubble %, makespan ms")
    for d, e in pairs:
        print(f"  {d['model']:16s} {d['schedule']:15s} {d['bubble_pct']:6.2f} -> {e['bubble_pct']:6.2f}   "
              f"{d['makespan_ms']:8.1f} -> {e['makespan_ms']:8.1f}")
    if all(d["makespan_ms"] == e["makespan_ms"] for d, e in pairs):
        print("  identical everywhere: each GPU's last job of a round is one of the round's final N slots, which "
              "finish in order, and the first of them (slot S - N) sits on GPU (g0 + S) mod N -- the paper's "
              "rule; the rules part only when stage times reorder those finishes")


def main() -> None:
    t0 = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    details = simulate_all()
    rows = result_rows(details)
    write_csv(OUT / "results.csv", rows)
    write_csv(OUT / "details.csv", details)
    figure(rows, details)
    report(details)
    print(f"\nwrote {OUT.relative_to(ROOT)}/results.csv, details.csv, bubbles.png in "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
