"""e04: where RoundPipe's advantage comes from, and where it ends.

One base setting (the paper's 8x RTX 4090 server, `roundpipe-4090x8`, Llama-3.1-8B, 16 microbatches of
4 x 2048 tokens, fp16 with fp16 accumulation, pcie fidelity), then one sweep at a time: PCIe generation,
host DRAM bandwidth, GPU-to-GPU P2P, sequence length, GPU count and model size. Each point compares
RoundPipe (async) with the best feasible baseline (max tokens/s over GPipe, 1F1B and interleaved 1F1B,
weights resident where they fit, else streamed to each stage's GPU). Topology changes go through a TOML
topology file (docs/topology.md) written to a temporary directory.

    python3 experiments/e04_where_roundpipe_wins.py

Writes experiments/out/e04/{results.csv, sweeps.png} and prints the summary table."""
from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments._common import finish

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUT = ROOT / "experiments" / "out" / "e04"
BASE_SERVER = "roundpipe-4090x8"
NVLINK_SERVER = "a800x8-nvlink"  # its per-direction NVLink bandwidth stands in for "P2P available"
# roundpipe.md's simulation setting: 16 microbatches of 4 x 2048 tokens.
BASE = {"model": "llama3-8b", "seq": 2048, "mb_size": 4, "gpus": 8, "pcie_gen": 4, "dram": None, "p2p": "none"}
N_MB, PRECISION = 16, "fp16-acc16"
BASELINES = ("gpipe", "1f1b", "interleaved")
ADAM_BOUND_SHARE = 0.95  # RoundPipe within 5% of its host-Adam bound counts as optimizer-bound
COLUMNS = ("sweep", "value", "model", "roundpipe_tokens_per_s", "best_baseline", "best_baseline_tokens_per_s",
           "ratio")
SHOWN = COLUMNS + ("mb_tokens", "baseline_weights", "roundpipe_adam_bound")
# A few points per sweep (the base value included); host DRAM in GB/s per socket (the preset's 86 is
# 8-channel DDR4-3200 STREAM, hardware.md; 150 is the A800 server preset's).
SWEEPS = {
    "pcie_gen": [3, 4, 5],
    "dram": [10, 25, 86, 150],
    "p2p": ["none", "nvlink"],
    "seq": [512, 1024, 2048, 4096, 8192],
    "gpus": [2, 4, 8],
    "model": ["qwen3-1.7b", "llama3-8b", "qwen3-32b"],
}
# Series per sweep (overrides of BASE). Tokens per microbatch are the compute that hides each stage's weight
# upload, so the link sweeps also run at one 2048-token sequence per microbatch, where weights are exposed;
# the sequence sweep runs one sequence per microbatch (512 .. 8192 tokens, the base's 8192 at the top).
SHORT = {"mb_size": 1}
SERIES = {"pcie_gen": [{}, SHORT], "dram": [{}, SHORT], "p2p": [{}, SHORT], "seq": [SHORT]}


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (int, float)):
        return repr(v)
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(table: dict) -> str:
    """The topology schema's shapes only: scalars, tables of scalars, arrays of tables of scalars."""
    lines = [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, (dict, list))]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
    for k, v in table.items():
        if isinstance(v, list):
            for entry in v:
                lines += ["", f"[[{k}]]"] + [f"{kk} = {toml_value(vv)}" for kk, vv in entry.items()]
    return "\n".join(lines) + "\n"


def topology(point: dict) -> dict:
    """The paper's server with this point's changes: GPUs split over its two sockets, PCIe generation on
    every GPU link, DRAM bandwidth of each socket, P2P."""
    from rpsim.catalog.data import preset_table
    presets = preset_table("servers.toml")
    t = copy.deepcopy(presets[BASE_SERVER])
    n = point["gpus"]
    link = {k: v for k, v in t["gpus"][0].items() if k not in ("count", "attach")}
    link["pcie_gen"] = point["pcie_gen"]
    counts = [n - n // 2, n // 2]
    t["gpus"] = [{"count": c, "attach": s["name"], **link} for c, s in zip(counts, t["sockets"], strict=True) if c]
    t["n_gpus"] = n
    if point["dram"] is not None:
        for s in t["sockets"]:
            s["dram_bandwidth_gb_per_s"] = float(point["dram"])
    if point["p2p"] != "none":
        t["p2p"] = point["p2p"]
        t["p2p_bandwidth_gb_per_s"] = presets[NVLINK_SERVER]["p2p_bandwidth_gb_per_s"]
    t["source"] = f"e04: {BASE_SERVER} with {point}"
    return t


def scenario(point: dict, tmp: Path):
    from rpsim.scenario import make_scenario
    from rpsim.specs import TrainingSpec
    keys = ("gpus", "pcie_gen", "dram", "p2p")
    path = tmp / ("server-" + "-".join(f"{k}{point[k]}" for k in keys) + ".toml")
    path.write_text(to_toml(topology(point)), encoding="utf-8")
    mb = point["mb_size"]
    t = TrainingSpec(seq_len=point["seq"], global_batch=N_MB * mb, mb_size=mb, precision=PRECISION,
                     recompute="stage")
    return make_scenario(point["model"], str(path), t)


def evaluate(point: dict, tmp: Path) -> dict:
    from rpsim.compare import run_one
    from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
    from rpsim.planner import PlanRequest
    from rpsim.schedules.roundpipe import round_sizes as roundpipe_round_sizes
    sc = scenario(point, tmp)
    rp = run_one(sc, PlanRequest("roundpipe")).metrics
    base = [run_one(sc, PlanRequest(s)).metrics for s in BASELINES]
    fitting = [m for m in base if m["feasible"]]
    best = max(fitting, key=lambda m: m["tokens_per_s"]) if fitting else None
    rp_tps = rp["tokens_per_s"] if rp["feasible"] else None
    ratio = rp_tps / best["tokens_per_s"] if (rp_tps and best) else None
    # RoundPipe steps every layer on the host once per iteration, summing one downloaded gradient per
    # round first (rpsim.costs.cpu_optimizer), so no iteration beats that CPU time: tokens per iteration
    # over it caps its tokens/s whatever the links do.
    params = sum(x.trainable_params for x in sc.costs.layers)
    rounds = len(roundpipe_round_sizes(sc.training.n_mb, sc.server.n_gpus, None))
    rates = cpu_optimizer_rates(sc.server.host, sc.profile, sc.server.host_dram_bytes_per_s)
    cpu_s = rates.step_s(params, rounds, sum(rates.resident_params(x.optimizer_tensors) for x in sc.costs.layers))
    adam_bound = sc.training.tokens_per_iteration / cpu_s
    return {"roundpipe_tokens_per_s": round(rp_tps) if rp_tps else "",
            "best_baseline": best["schedule"] if best else "none fits",
            "best_baseline_tokens_per_s": round(best["tokens_per_s"]) if best else "",
            "ratio": round(ratio, 3) if ratio else "",
            "roundpipe_adam_bound": round(adam_bound),
            "roundpipe_at_adam_bound": bool(rp_tps and rp_tps >= ADAM_BOUND_SHARE * adam_bound),
            "roundpipe_reason": rp["reason"], "baseline_weights": best.get("weights", "") if best else "",
            "baseline_reasons": "; ".join(f"{m['schedule']}: {m['reason']}" for m in base if not m["feasible"])}


def run_all() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="e04-") as d:
        for sweep, values in SWEEPS.items():
            for series in SERIES.get(sweep, [{}]):
                for value in values:
                    t0 = time.perf_counter()
                    point = {**BASE, **series, sweep: value}
                    rows.append({"sweep": sweep, "value": value, "model": point["model"], **evaluate(point, Path(d)),
                                 "mb_tokens": point["mb_size"] * point["seq"]})
                    print(f"  {sweep}={value} {series}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


SERIES_COLOURS = ("tab:blue", "tab:orange", "tab:green")
# Letters above each point name the best baseline there; full names would overlap at a panel's width.
BASELINE_MARKS = {"gpipe": "GP", "1f1b": "1F1B", "interleaved": "IL"}


def figure(rows: list[dict], path: Path | None = None) -> Figure:
    """One panel per sweep of RoundPipe's tokens/s over the best baseline's; letters at each point
    name that baseline, a red note marks a point where one side does not fit."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from rpsim.catalog import load_model
    from rpsim.catalog.servers import load_server
    from rpsim.plot.style import FONT_PT, PAGE_IN, paper_rc
    from rpsim.plot.titles import device_title, model_title
    labels = {"pcie_gen": "PCIe generation", "dram": "host DRAM GB/s per socket", "p2p": "GPU-GPU P2P",
              "seq": "tokens per sequence (1 sequence/mb)", "gpus": "GPUs", "model": "model"}
    top = max([r["ratio"] for r in rows if r["ratio"] != ""] + [1.0]) * 1.3
    series: dict[str, str] = {}
    with rc_context(paper_rc()):
        fig = Figure(figsize=(PAGE_IN, 4.4), layout="constrained")
        axes = fig.subplots(2, 3, sharey=True)
        for ax, sweep in zip(axes.flat, SWEEPS, strict=True):
            values = SWEEPS[sweep]
            xs = range(len(values))
            by_tokens: dict[int, list[dict]] = {}
            for r in rows:
                if r["sweep"] == sweep:
                    by_tokens.setdefault(r["mb_tokens"] if sweep != "seq" else 0, []).append(r)
            for k, (tokens, mine) in enumerate(by_tokens.items()):
                ys = [r["ratio"] if r["ratio"] != "" else float("nan") for r in mine]
                label = "1 sequence/mb" if sweep == "seq" else f"{tokens:,} tokens/mb"
                series.setdefault(label, SERIES_COLOURS[len(series) % len(SERIES_COLOURS)])
                ax.plot(xs, ys, "o-", color=series[label], markersize=3.5, linewidth=1.2)
                for x, r in zip(xs, mine, strict=True):
                    if r["ratio"] == "":  # one side does not fit: no ratio to draw
                        text = "no baseline\nfits" if r["best_baseline"] == "none fits" else "RoundPipe\nOOM"
                        ax.annotate(text, (x, top * (0.86 - 0.22 * k)), ha="center", va="top",
                                    fontsize=FONT_PT["note"], color="tab:red")
                    else:
                        # The first series labelled above its points, the second below (unless that
                        # would cross the x axis), so two series at one x do not write over each other.
                        above = k == 0 or r["ratio"] < 0.15 * top
                        ax.annotate(BASELINE_MARKS.get(r["best_baseline"], r["best_baseline"]), (x, r["ratio"]),
                                    textcoords="offset points", xytext=(0, 4 if above else -4), ha="center",
                                    va="bottom" if above else "top", fontsize=FONT_PT["note"], color="0.3")
            ax.axhline(1.0, color="k", lw=0.7, ls="--")
            ax.set_xticks(list(xs), [f"{v:,}" if isinstance(v, int) and v >= 1000 else str(v) for v in values])
            ax.set_xlim(-0.5, len(values) - 0.5)  # room for the labels of the first and last points
            ax.set_xlabel(labels[sweep])
            ax.set_ylim(0, top)
        for ax in axes[:, 0]:
            ax.set_ylabel("RoundPipe / best baseline")
        handles = [Line2D([], [], color=c, marker="o", markersize=3.5, label=lab) for lab, c in series.items()]
        handles.append(Line2D([], [], color="k", ls="--", lw=0.7, label="break-even"))
        marks = ", ".join(f"{m} {name}" for name, m in BASELINE_MARKS.items())
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles),
                   title=f"at each point: the best baseline there ({marks})", title_fontsize=FONT_PT["legend"])
        fig.suptitle(f"e04: {model_title(load_model(BASE['model']))} on {device_title(load_server(BASE_SERVER))} "
                     f"unless swept; pcie fidelity, {PRECISION}")
        fig.savefig(path or OUT / "sweeps.png")
    return fig


def report(rows: list[dict]) -> None:
    from rpsim.report.table import format_table
    print(format_table(SHOWN, [[r[k] for k in SHOWN] for r in rows]))
    wins = [r for r in rows if (r["ratio"] != "" and r["ratio"] < 1) or
            (r["roundpipe_tokens_per_s"] == "" and r["best_baseline_tokens_per_s"] != "")]
    print("\nRegimes where a baseline wins:")
    for r in wins:
        why = f"RoundPipe out of memory ({r['roundpipe_reason']})" if r["roundpipe_tokens_per_s"] == "" else \
            f"x{r['ratio']}" + (f", RoundPipe at its host-Adam bound ({r['roundpipe_adam_bound']} tokens/s)"
                                if r["roundpipe_at_adam_bound"] else "")
        print(f"  {r['sweep']}={r['value']} ({r['model']}, {r['mb_tokens']} tokens/mb): {r['best_baseline']} "
              f"({r['baseline_weights']}) {r['best_baseline_tokens_per_s']} tokens/s; {why}")
    if not wins:
        print("  none in these sweeps")
    alone = [f"{r['sweep']}={r['value']}" for r in rows if r["best_baseline"] == "none fits"]
    if alone:
        print(f"No baseline fits (RoundPipe alone): {', '.join(alone)}")
    print("Range of the ratio per sweep (tokens per microbatch):")
    for sweep in SWEEPS:
        for tokens in sorted({r["mb_tokens"] for r in rows if r["sweep"] == sweep and sweep != "seq"} or {0}):
            ratios = [(r["value"], r["ratio"]) for r in rows if r["sweep"] == sweep and r["ratio"] != ""
                      and (sweep == "seq" or r["mb_tokens"] == tokens)]
            if len(ratios) > 1:
                lo, hi = min(ratios, key=lambda x: x[1]), max(ratios, key=lambda x: x[1])
                where = "1 sequence/mb" if sweep == "seq" else f"{tokens} tokens/mb"
                print(f"  {sweep:9s} {where:16s} {lo[1]:.2f} at {lo[0]} .. {hi[1]:.2f} at {hi[0]}")


def main() -> None:
    t0 = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = run_all()
    figure(rows)
    report(rows)
    finish(OUT, ROOT, rows, "sweeps.png", t0)


if __name__ == "__main__":
    main()
