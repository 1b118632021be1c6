"""e03's host STEPs one by one: does the cache-residency rule (rpsim.costs.cpu_optimizer) predict them?

    python3 experiments/e03_step_cache.py     # ~40 s; writes experiments/out/e03/step_cache.csv

For every RoundPipe and RoundPipe-sync run of experiments/data/e03, the mean STEP over decoder layers,
the embedding and the head (iterations after the first), measured and predicted, the decoder STEPs also
by what ran beside them in the measured trace (nothing, DMA only, GPU compute), and the steady
iteration. Predicted three ways from the calibrated machine file (experiments/data/machines/h200xN.toml):
- `streamed`: the file as it is, every tensor streamed from DRAM (the calibrated 157M-parameter tensor);
- `cache`: plus the host's last-level cache (the file's [calibration] record, lscpu's 300 MiB L3): a
  decoder tensor whose fp32 gradient and scratch fit moves 2 B per parameter from DRAM on its later
  passes, at the streamed rate (no resident rate measured);
- `cache+rate`: plus the resident pass rate measured alone on the same machine kind over the largest
  e03 decoder layer whose every tensor fits (llama-1.8b's, hidden 3072), at the run's STEP thread count
  (benchmarks/step_in_context.py --layer-rates: h200x2-layer-step-rates-*.json).
"""
from __future__ import annotations

import re
import statistics
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments._common import write_csv
from experiments.e03_sim_vs_real import (
    DATA,
    MACHINES,
    OUT,
    _block_iteration_s,
    prediction_setup,
    steady_prediction,
)

VARIANTS = ("streamed", "cache", "cache+rate")
RATE_FILES = ("h200x2-layer-step-rates-2026-11-30.json",  # torch's 32 threads
              "h200x2-layer-step-rates-27-22-threads-2026-11-30.json")
RESIDENT_HIDDEN = 3072  # llama-1.8b's layer: its largest tensor's gradient + scratch is 201 MB of 315
GPU_KINDS, DMA_KINDS = {"F", "B", "FB", "W"}, {"LOAD", "OFFLOAD", "ACT_IN", "ACT_OUT", "SEND"}


def resident_rates_by_threads() -> dict[int, float]:
    from rpsim.jsonfile import read_json
    out = {}
    for name in RATE_FILES:
        for row in read_json(MACHINES / name, "layer step rates", ValueError):
            if row["hidden"] == RESIDENT_HIDDEN:
                out[row.get("threads", 32)] = row["grad_accumulate_params_per_s"]
    return out


def alone_probe_s(hidden: int, threads: int, n_staged: int) -> float:
    """The decoder STEP timed alone over this layer shape at this thread count (the same rate files):
    its 1-gradient time plus n_staged - 1 of its per-gradient increments."""
    from rpsim.jsonfile import read_json
    for name in RATE_FILES:
        for row in read_json(MACHINES / name, "layer step rates", ValueError):
            if row["hidden"] == hidden and row.get("threads", 32) == threads:
                one, eight = row["step_1_staged_s"], row["step_8_staged_s"]
                return one + (n_staged - 1) * (eight - one) / 7
    raise ValueError(f"no alone STEP of a {hidden}-wide layer at {threads} threads in {RATE_FILES}")


def variant_machine(n_gpus: int, variant: str, threads: int, folder: Path) -> Path:
    """The calibrated machine file, with the host's cache (and resident rate) added per `variant`."""
    from rpsim.report.toml_text import toml_text
    base = MACHINES / f"h200x{n_gpus}.toml"
    if variant == "streamed":
        return base
    table = tomllib.loads(base.read_text())
    table["host"]["last_level_cache_mib"] = table["calibration"]["last_level_cache_bytes"] / 2**20
    if variant == "cache+rate":
        table["host"]["grad_accumulate_resident_params_per_s"] = resident_rates_by_threads()[threads]
    path = folder / f"h200x{n_gpus}-{variant}-{threads}.toml"
    path.write_text(toml_text(table))
    return path


def _overlap_s(span: tuple[float, float], others: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(span[1], b) - max(span[0], a)) for a, b in others)


def _group(events, n_layers: int) -> dict[str, list]:
    out: dict[str, list] = {"embed": [], "decoder": [], "head": []}
    for e in events:
        chunk = int(re.search(r"\.c(\d+)", e.action).group(1))  # type: ignore[union-attr]
        out["embed" if chunk == 0 else "head" if chunk == n_layers - 1 else "decoder"].append(e)
    return out


def _mean_ms(events) -> float:
    return 1e3 * statistics.mean(e.end_s - e.start_s for e in events) if events else float("nan")


def measured_row(plan, trace, n_layers: int) -> dict:
    steps = [e for e in trace.events if e.kind == "STEP" and e.it >= 1]
    gpu = [(e.start_s, e.end_s) for e in trace.events if e.kind in GPU_KINDS]
    dma = [(e.start_s, e.end_s) for e in trace.events if e.kind in DMA_KINDS]
    groups = _group(steps, n_layers)
    beside: dict[str, list] = {"nothing": [], "dma": [], "gpu": []}
    for e in groups["decoder"]:
        span, d = (e.start_s, e.end_s), e.end_s - e.start_s
        if _overlap_s(span, gpu) >= 0.5 * d:
            beside["gpu"].append(e)
        elif _overlap_s(span, gpu) < 0.1 * d:
            beside["nothing" if _overlap_s(span, dma) < 0.1 * d else "dma"].append(e)
    return {**{f"measured_{g}_ms": _mean_ms(v) for g, v in groups.items()},
            **{f"measured_decoder_beside_{k}_ms": _mean_ms(v) for k, v in beside.items()},
            "measured_step_busy_s": sum(e.end_s - e.start_s for e in steps) / len({e.it for e in steps}),
            "measured_iteration_s": (steady_iteration(trace) if plan.optimizer == "async" else _block_iteration_s(trace))}


def steady_iteration(trace) -> float:
    from rpsim.validate_run import steady_iteration_s
    return steady_iteration_s(trace)


def predicted_row(plan, sc, variant: str, n_layers: int) -> dict:
    from rpsim.sim.simulate import simulate
    sim = simulate(plan, sc, stop_at_steady=False)
    steps = [e for e in sim.trace.events if e.kind == "STEP" and (e.it >= 1 or plan.n_iters == 1)]
    groups = _group(steps, n_layers)
    iteration = (steady_prediction(plan, sc).metrics if plan.optimizer == "async" else sim.metrics)["iteration_s"]
    return {**{f"{variant}_{g}_ms": _mean_ms(v) for g, v in groups.items()},
            f"{variant}_step_busy_s": sum(e.end_s - e.start_s for e in steps) / len({e.it for e in steps}),
            f"{variant}_iteration_s": iteration}


def compare(data: Path = DATA) -> list[dict]:
    from rpsim.ir.planio import load_plan
    from rpsim.scenario import scenario_from_setup
    from rpsim.sim.action_costs import staged_gradients
    from rpsim.sim.trace import load_trace
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for plan_path in sorted(data.glob("*-roundpipe*-plan.json")):
            plan = load_plan(plan_path)
            trace = load_trace(str(plan_path).replace("-plan.json", "-trace.json"))
            threads = trace.meta.get("optimizer_threads") or 32  # runs before rpexec recorded it: torch's 32
            row = {"run": plan_path.name.removesuffix("-plan.json"), "threads": threads}
            for variant in VARIANTS:
                machine = variant_machine(plan.n_gpus, variant, threads, Path(tmp))
                sc = scenario_from_setup(prediction_setup(plan.setup, plan.n_gpus, "machine", data, machine))
                n_layers = len(sc.costs.layers)
                row.update(predicted_row(plan, sc, variant, n_layers))
            n_staged = staged_gradients(plan).get((1, min(1, plan.n_iters - 1)), 1)
            row["decoder_staged"] = n_staged
            row["alone_probe_decoder_ms"] = 1e3 * alone_probe_s(sc.model.hidden, threads, n_staged)
            row["decoder_params"] = sc.costs.layers[1].trainable_params
            row["embed_params"] = sc.costs.layers[0].trainable_params
            rows.append({**row, **measured_row(plan, trace, n_layers)})
    return rows


def report(rows: list[dict]) -> None:
    print("decoder-layer STEP, mean ms (measured: all / with nothing beside / beside GPU compute), then "
          "predicted streamed / cache / cache+rate:")
    for r in rows:
        print(f"  {r['run']:30s} {r['threads']:>2d} thr  {r['measured_decoder_ms']:6.1f} / "
              f"{r['measured_decoder_beside_nothing_ms']:6.1f} / {r['measured_decoder_beside_gpu_ms']:6.1f}   "
              + " / ".join(f"{r[f'{v}_decoder_ms']:6.1f}" for v in VARIANTS)
              + f"   embedding {r['measured_embed_ms']:6.1f} vs {r['streamed_embed_ms']:6.1f}")
    print("decoder STEP with nothing beside it in the run against the same layer's STEP timed alone at the "
          "run's thread count (another lease), ms:")
    for r in rows:
        m, a = r["measured_decoder_beside_nothing_ms"], r["alone_probe_decoder_ms"]
        print(f"  {r['run']:30s} {r['decoder_staged']} staged, {r['threads']:>2d} thr: run {m:6.1f}, "
              f"alone {a:6.1f}, excess {m - a:5.1f} ({100 * (m / a - 1):+4.0f}%)")
    print("a decoder layer's STEP per parameter over the embedding's (same run, so the same lease; the "
          "embedding's gradient + scratch are 1.7-13x the cache): measured, then streamed / cache / cache+rate:")
    for r in rows:
        ratios = [(r[f"{k}_decoder_ms"] / r["decoder_params"]) / (r[f"{k}_embed_ms"] / r["embed_params"])
                  for k in ("measured", *VARIANTS)]
        print(f"  {r['run']:30s} {ratios[0]:5.2f}   " + " / ".join(f"{x:5.2f}" for x in ratios[1:]))
    print("steady iteration, s: measured, then each prediction and its error:")
    for r in rows:
        m = r["measured_iteration_s"]
        print(f"  {r['run']:30s} {m:7.3f}  " + "  ".join(
            f"{v} {r[f'{v}_iteration_s']:7.3f} ({100 * (r[f'{v}_iteration_s'] / m - 1):+5.1f}%)" for v in VARIANTS))
    for v in VARIANTS:
        errors = [abs(r[f"{v}_iteration_s"] / r["measured_iteration_s"] - 1) for r in rows]
        print(f"{v:10s}: RoundPipe iteration error median {100 * statistics.median(errors):.1f}%, "
              f"max {100 * max(errors):.1f}% over {len(rows)} runs")


def main() -> None:
    rows = compare()
    write_csv(OUT / "step_cache.csv", rows)
    report(rows)


if __name__ == "__main__":
    main()
