"""e03: how well does rpsim predict real runs? For three model sizes x {gpipe, 1f1b, roundpipe-sync,
roundpipe} x GPU counts: `rpexec profile`, then rpsim's prediction from that profile, then `rpexec run`.

    python3 experiments/e03_sim_vs_real.py --measure --gpus 1,2 --out DIR   # on the GPU machine
    python3 experiments/e03_sim_vs_real.py --measure --gpus 4,8 --mem-cap-gib 24 --out DIR  # issue 10
    python3 experiments/e03_sim_vs_real.py                                   # compare, from experiments/data/e03

The measure step saves, per run, the plan and the measured trace (small) so the comparison reruns
without a GPU. Writes experiments/out/e03/results.csv and a figure, and prints the summary table."""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments._common import machine_without, measured_folder
from rpsim.ir.weight_deps import GRAD_FENCES, grad_fence_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SIZES = {  # Llama-style models; (hidden, layers, heads, kv heads, mlp, vocab); 2.8b is issue 8's benchmark
    "llama-0.7b": (2048, 12, 16, 4, 5632, 32000),
    "llama-1.8b": (3072, 16, 24, 8, 8192, 32000),
    "llama-2.8b": (3072, 26, 24, 8, 8192, 32000),
    "llama3-8b": (4096, 32, 32, 8, 14336, 128256),  # the Llama-3-8B shape (models.md), 128K vocabulary
}
# 8 microbatches of 4 x 2048 tokens. The first measurements used 2 x 1024-token microbatches: there a
# layer's kernels took less time on the GPU than Python took to issue them, so every run measured the
# host (two GPUs were no faster than one), which rpsim rightly does not model.
SEQ, GLOBAL_BATCH, N_MB = 2048, 32, 8
SCHEDULES = ("gpipe", "1f1b", "interleaved", "roundpipe-sync", "roundpipe")
DATA = ROOT / "experiments" / "data" / "e03"
OUT = ROOT / "experiments" / "out" / "e03"


def model(name: str):
    from rpsim.specs import ModelSpec
    h, layers, heads, kv, mlp, vocab = SIZES[name]
    return ModelSpec(name=name, n_layers=layers, hidden=h, n_heads=heads, n_kv_heads=kv, head_dim=128,
                     mlp_width=mlp, vocab=vocab)


def training():
    from rpsim.specs import TrainingSpec
    return TrainingSpec(seq_len=SEQ, global_batch=GLOBAL_BATCH, mb_size=GLOBAL_BATCH // N_MB, precision="bf16")


def measure(gpu_counts: list[int], out: Path, device: str = "cuda", mem_cap_gib: float | None = None,
            sizes: tuple[str, ...] = tuple(SIZES), schedules: tuple[str, ...] = SCHEDULES,
            optimizer_threads: str = "auto", grad_fence: str | None = None,
            copy_order: str = "activations-first") -> None:
    from dataclasses import replace

    import torch

    from rpexec.profile import make_profile
    from rpexec.session import RunOptions, run_plan
    from rpsim.ir.planio import save_plan
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.report.files import write_json_atomic
    from rpsim.scenario import make_scenario
    t = training()
    dtype = "bf16" if device == "cuda" else "fp32"
    cap = mem_cap_gib * 2**30 if mem_cap_gib else None
    if device == "cuda":
        torch.cuda.init()  # a rerun that reuses the profile touches no GPU before resetting the peaks
    if cap and device == "cuda":  # mimic smaller GPUs (issue 10: 24 GiB, an RTX 4090's memory)
        for d in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap / torch.cuda.get_device_properties(d).total_memory), d)
    for name in sizes:
        prof_path = out / f"{name}-profile.json"
        if not prof_path.exists():  # a rerun of some schedules keeps the profile the others were predicted from
            write_json_atomic(prof_path, make_profile(model(name), SEQ, t.mb_size, dtype, device, reps=5))
        for g in gpu_counts:
            sc = make_scenario(model(name), f"h200x{g}", t, str(prof_path), gpu_memory_bytes=cap)
            for schedule in schedules:
                req = PlanRequest(schedule, n_iters=4 if schedule == "roundpipe" else 1)
                plan = make_plan(sc, replace(req, grad_fence=grad_fence) if grad_fence else req)
                blocks = 1 if schedule == "roundpipe" else 4
                for d in range(torch.cuda.device_count()):
                    torch.cuda.reset_peak_memory_stats(d)
                stem = out / f"{name}-{schedule}-{g}gpu"
                try:
                    result = run_plan(plan, sc.model, SEQ, t.mb_size, RunOptions(device=device, dtype=dtype, blocks=blocks,
                                                                                 optimizer_threads=optimizer_threads,
                                                                                 copy_order=copy_order))
                except Exception as e:  # noqa: BLE001 - one failed run must not stop the measurement of the rest
                    print(f"FAILED {stem.name}: {type(e).__name__}: {e}", flush=True)
                    continue
                save_plan(plan, f"{stem}-plan.json")
                write_json_atomic(f"{stem}-trace.json", result.trace.to_json())
                print(f"measured {stem.name}: makespan {result.trace.makespan_s:.3f} s", flush=True)
    with tarfile.open(out / "e03.tar.gz", "w:gz") as tar:
        for f in sorted(out.glob("*.json")):
            tar.add(f, arcname=f.name)


def remeasure_cpu_rates(out: Path, dtype: str = "bf16") -> None:
    """Measure the CPU optimizer's rates (rpexec.profile.profile_cpu_optimizer) and write them into every
    profile under `out`: for profiles taken before the profile measured gradient accumulation."""
    from rpexec.profile import profile_cpu_optimizer
    from rpsim.jsonfile import read_json
    from rpsim.report.files import write_json_atomic
    rates = profile_cpu_optimizer(dtype)
    for path in sorted(out.glob("*-profile.json")):
        data = read_json(path, "profile", ValueError)
        data["cpu"] = rates
        data.setdefault("conditions", {})["notes"] = "cpu rates re-measured on a later lease of the same machine kind"
        write_json_atomic(path, data)
    print(f"cpu optimizer rates: {rates}")


# What the prediction is made from: the per-size profile `rpexec profile` measured (layer times, link
# and optimizer rates); the machine file `rpexec calibrate` measured on the same machine kind (no
# profile: the cost model prices every layer from its GEMM table); or the built-in h200 presets alone.
# machine+profile: the machine file for the server, each size's profile for its layers and its STEP;
# machine+step: the machine file, and of each size's profile only the host STEP (what `rpexec profile
# --host-step-only` writes: the profile without its layers and links).
SOURCES = ("profile", "machine", "preset", "machine+profile", "machine+step")
SOURCE_LABELS = {"profile": "from rpexec profile", "machine": "from the calibrated machine file",
                 "preset": "from the built-in presets",
                 "machine+profile": "from the machine file and each size's rpexec profile",
                 "machine+step": "from the machine file and each size's profiled host STEP"}
_HOST_STEP_PROFILES: dict[str, str] = {}


def host_step_profile(path: str) -> str:
    """A copy of profile `path` with only its host STEP (no layers, no links), once per process."""
    if path not in _HOST_STEP_PROFILES:
        import json
        import tempfile
        data = json.loads(Path(path).read_text())
        folder = Path(tempfile.mkdtemp(prefix="rpsim-step-profile-"))
        out = folder / Path(path).name
        out.write_text(json.dumps({k: v for k, v in data.items() if k not in ("layers", "links")}))
        _HOST_STEP_PROFILES[path] = str(out)
    return _HOST_STEP_PROFILES[path]
MACHINES = ROOT / "experiments" / "data" / "machines"


def prediction_setup(setup: dict, n_gpus: int, source: str, data: Path = DATA, machine: Path | None = None) -> dict:
    """`data`: the folder of measured runs and their profiles; `machine`: the machine file (default: the
    calibrated h200xN of experiments/data/machines for an N-GPU run)."""
    setup = dict(setup)
    if source in ("profile", "machine+profile", "machine+step"):  # the size's own (plans from presets name none)
        setup["profile"] = str(data / (Path(setup["profile"]).name if setup.get("profile")
                                       else f"{setup['model']['name']}-profile.json"))
        if source == "machine+step":
            setup["profile"] = host_step_profile(setup["profile"])
    else:
        setup["profile"] = None
    if source in ("machine", "machine+profile", "machine+step"):
        setup["server"] = str(machine or MACHINES / f"h200x{n_gpus}.toml")
    return setup


def compare(source: str = "profile", data: Path = DATA, machine: Path | None = None) -> tuple[list[dict], list[dict]]:
    """The issue's per-run rows, and per run and action class the mean duration predicted and measured
    (measured: iterations after the first, which pays first-touch costs), which says where a miss comes
    from."""
    from rpsim.ir.planio import load_plan
    from rpsim.scenario import scenario_from_setup
    from rpsim.sim.simulate import simulate
    from rpsim.sim.trace import load_trace
    from rpsim.validate_run import CLASSES, measured_metrics, steady_iteration_s
    rows, by_class = [], []
    for plan_path in sorted(data.glob("*-plan.json")):
        plan = load_plan(plan_path)
        sc = scenario_from_setup(prediction_setup(plan.setup, plan.n_gpus, source, data, machine))
        trace = load_trace(str(plan_path).replace("-plan.json", "-trace.json"))
        sim = simulate(plan, sc, stop_at_steady=False)  # compared with a measured run of every iteration
        pred = steady_prediction(plan, sc).metrics if plan.optimizer == "async" else sim.metrics
        meas = measured_metrics(plan, trace, sc)
        for kind in CLASSES:
            p_s = [e.end_s - e.start_s for e in sim.trace.events if e.kind == kind]  # no warm-up simulated
            m_s = [e.end_s - e.start_s for e in trace.events if e.kind == kind and e.it >= 1]
            if p_s and m_s and statistics.mean(p_s) > 0:
                by_class.append({"model": sc.model.name, "schedule": plan.schedule, "gpus": plan.n_gpus,
                                 "class": kind, "predicted_mean_s": statistics.mean(p_s),
                                 "measured_mean_s": statistics.mean(m_s),
                                 "ratio": statistics.mean(m_s) / statistics.mean(p_s)})
        measured_s = steady_iteration_s(trace) if plan.optimizer == "async" else _block_iteration_s(trace)
        rows.append({"model": sc.model.name, "schedule": plan.schedule, "gpus": plan.n_gpus,
                     "predicted_s": pred["iteration_s"], "measured_s": measured_s,
                     "predicted_bubble": pred["bubble"], "measured_bubble": meas["bubble"],
                     "predicted_peak_gib": max(pred["peak_gpu_allocated_bytes"]) / 2**30,
                     "measured_peak_gib": max(trace.meta.get("peak_gpu_mem_bytes") or [0]) / 2**30})
    return rows, by_class


def steady_prediction(plan, sc):
    """An async plan's steady state, as rpsim predicts it for a user (rpsim.steady_run): the measured run's
    iterations follow rpexec's warm-up, so they are steady, while a few simulated ones from a cold start
    need not be (where the host optimizer is the bottleneck its queue fills over 3 iterations). The same
    plan, rebuilt from its request with as many iterations as the steady state needs; the rebuilt plan's
    first iterations must be the measured plan's (checked)."""
    from dataclasses import replace

    from rpsim.planner import make_plan
    from rpsim.steady_run import simulate_request
    req = request_of(plan)
    rebuilt = make_plan(sc, replace(req, n_iters=plan.n_iters))
    if rebuilt.lanes != plan.lanes or rebuilt.extra_edges != plan.extra_edges:
        raise ValueError(f"{plan.schedule}: the plan rebuilt from {req} differs from the measured one")
    return simulate_request(sc, req)


def request_of(plan):
    """The PlanRequest that rebuilds `plan`: its schedule, partition, round size and backward fence."""
    from rpsim.partition.counts import partition_to_spec
    from rpsim.planner import PlanRequest
    from rpsim.schedules.roundpipe import round_sizes
    sizes = list(plan.options.get("round_sizes") or [])
    round_size = None
    if sizes and round_sizes(plan.n_mb, plan.n_gpus) != sizes:
        round_size = sizes[0]
    return PlanRequest(plan.schedule, partition=partition_to_spec(plan.partition), round_size=round_size,
                       g0_rule=plan.options.get("g0_rule", "paper"),
                       grad_fence=grad_fence_of(plan.options),
                       defer_w=bool(plan.options.get("defer_w", False)))


TIE = 0.03  # schedules measured within 3% of each other count as tied (the rule)


def rank_fidelity(rows: list[dict]) -> list[dict]:
    """Per configuration (model, GPU count): does the predicted order of schedules match the measured one?
    A pair of schedules is ordered wrongly when the prediction puts the measured-slower one strictly
    first, unless the two measured within TIE of each other."""
    out = []
    for key in dict.fromkeys((r["model"], r["gpus"]) for r in rows):
        runs = [r for r in rows if (r["model"], r["gpus"]) == key]
        wrong = []
        for a in runs:
            for b in runs:
                slower_measured = a["measured_s"] > b["measured_s"] * (1 + TIE)
                if slower_measured and a["predicted_s"] < b["predicted_s"]:
                    wrong.append(f"{a['schedule']} before {b['schedule']}")
        measured = " < ".join(r["schedule"] for r in sorted(runs, key=lambda r: r["measured_s"]))
        predicted = " < ".join(r["schedule"] for r in sorted(runs, key=lambda r: r["predicted_s"]))
        out.append({"model": key[0], "gpus": key[1], "measured_order": measured, "predicted_order": predicted,
                    "right": not wrong, "wrong_pairs": "; ".join(wrong)})
    return out


def _block_iteration_s(trace) -> float:
    """Flushed schedules ran one iteration per block: the mean block after the first (warm-up) one."""
    from rpsim.validate_run import steady_iteration_s
    return steady_iteration_s(trace, skip=0)


def report(rows: list[dict], by_class: list[dict], source: str = "profile", figure_path: Path | None = None,
           library: bool = True) -> None:
    """`library`: also predict the roundpipe library's benchmark runs (measured on the 2x H200 host)."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, table in (("results.csv", rows), ("by_class.csv", by_class)):
        with open(OUT / name, "w", newline="") as f:
            w = csv.DictWriter(f, list(table[0]))
            w.writeheader()
            w.writerows(table)
    errors = [abs(r["predicted_s"] / r["measured_s"] - 1) for r in rows]
    print(f"{'model':12s} {'schedule':15s} {'gpus':>4s} {'pred_s':>8s} {'meas_s':>8s} {'err':>7s} "
          f"{'pred_bub':>8s} {'meas_bub':>8s} {'pred_GiB':>8s} {'meas_GiB':>8s}")
    for r, e in zip(rows, errors, strict=True):
        print(f"{r['model']:12s} {r['schedule']:15s} {r['gpus']:4d} {r['predicted_s']:8.4f} {r['measured_s']:8.4f} "
              f"{100 * e:6.1f}% {r['predicted_bubble']:8.3f} {r['measured_bubble']:8.3f} "
              f"{r['predicted_peak_gib']:8.2f} {r['measured_peak_gib']:8.2f}")
    print(f"iteration-time error: median {100 * statistics.median(errors):.1f}%, max {100 * max(errors):.1f}% "
          f"over {len(rows)} runs")
    mem = [abs(r["predicted_peak_gib"] / r["measured_peak_gib"] - 1) for r in rows if r["measured_peak_gib"] > 0]
    if mem:
        print(f"peak GPU memory error: median {100 * statistics.median(mem):.1f}%, max {100 * max(mem):.1f}%")
    ranks = rank_fidelity(rows)
    print(f"schedule ranking right in {sum(r['right'] for r in ranks)} of {len(ranks)} configurations "
          f"(measured within {100 * TIE:.0f}% = tied):")
    for r in ranks:
        print(f"  {r['model']:12s} {r['gpus']} GPU(s): {'right' if r['right'] else 'WRONG: ' + r['wrong_pairs']}"
              f"  (measured {r['measured_order']})")
    print("measured / predicted mean action time, median over runs (by_class.csv has every run):")
    for kind in dict.fromkeys(r["class"] for r in by_class):
        for label, gpus in (("1 GPU", 1), ("2 GPUs", 2)):
            ratios = [r["ratio"] for r in by_class if r["class"] == kind and r["gpus"] == gpus]
            if ratios:
                print(f"  {kind:8s} {label:7s} {statistics.median(ratios):5.2f}  "
                      f"(range {min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} runs)")
    from experiments.e03_library import predict_library
    libs = predict_library(source) if library else []
    if libs:
        with open(OUT / "library.csv", "w", newline="") as f:
            w = csv.DictWriter(f, list(libs[0]))
            w.writeheader()
            w.writerows(libs)
    for lib in libs:
        err = lib["predicted_s"] / lib["measured_s"] - 1
        print(f"{lib['system']} ({lib['size']} benchmark, 2 x H200 at 24 GiB): predicted {lib['predicted_tokens_per_s']:,.0f} "
              f"tokens/s ({lib['predicted_s']:.3f} s), measured {lib['measured_tokens_per_s']:,.0f} "
              f"({lib['measured_s']:.3f} s), iteration-time error {100 * err:+.1f}%")
    figure(rows, figure_path, source=source)


def figure(rows: list[dict], path: Path | None = None, source: str = "profile") -> Figure:
    """Predicted against measured iteration time, one colour per schedule, one column wide."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    from rpsim.plot.style import COLUMN_IN, paper_rc
    with rc_context(paper_rc()):
        fig = Figure(figsize=(COLUMN_IN, COLUMN_IN + 0.5), layout="constrained")
        ax = fig.subplots()
        for schedule in SCHEDULES:
            pts = [(r["measured_s"], r["predicted_s"]) for r in rows if r["schedule"] == schedule]
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=schedule, s=14)
        lim = max(max(r["measured_s"], r["predicted_s"]) for r in rows) * 1.1
        ax.plot([0, lim], [0, lim], "k--", lw=0.8, label="prediction = measurement")
        ax.set(xlabel="measured iteration (s)", ylabel="predicted iteration (s)", xlim=(0, lim), ylim=(0, lim))
        ax.set_aspect("equal")
        # three short lines: one column is ~3.3 in wide, and a clipped title loses its first words
        counts = " and ".join(str(g) for g in sorted({r["gpus"] for r in rows}))
        fig.suptitle(f"e03: rpsim against rpexec on H200 SXM\n({SOURCE_LABELS[source]}),\n{counts} GPUs")
        fig.legend(loc="outside lower center", ncol=2)
        fig.savefig(path or OUT / "predicted_vs_measured.png")
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--measure", action="store_true")
    p.add_argument("--gpus", default="1,2")
    p.add_argument("--out", default=str(DATA))
    p.add_argument("--mem-cap-gib", type=float, default=None, help="cap each GPU's memory (e.g. 24)")
    p.add_argument("--sizes", default=",".join(SIZES), help=f"model sizes to measure, of {', '.join(SIZES)} (default: all)")
    p.add_argument("--schedules", default=",".join(SCHEDULES), help="schedules to measure (default: all)")
    p.add_argument("--optimizer-threads", default="auto",
                   help="the runs' host STEP threads, as rpexec run --optimizer-threads (auto, all or N; default auto)")
    p.add_argument("--grad-fence", default=None, choices=GRAD_FENCES,
                   help="with --measure: the plans' gradient fence (rpsim.ir.weight_deps; default: the planner's)")
    p.add_argument("--copy-order", default="activations-first", choices=("activations-first", "as-issued"),
                   help="with --measure: the runs' copy order, as rpexec run --copy-order (default %(default)s)")
    p.add_argument("--predict-from", default="profile", choices=SOURCES,
                   help="profile: each size's rpexec profile; machine: the rpexec calibrate machine file "
                        "(experiments/data/machines); preset: the built-in h200 presets only; machine+profile: "
                        "the machine file and each size's profile; machine+step: the machine file and each "
                        "size's profiled host STEP only (default: profile)")
    p.add_argument("--data", default=str(DATA),  # a folder, or a .tar.gz of one
                   help="the measured runs to compare with (default: experiments/data/e03, 2x H200)")
    p.add_argument("--machine", default=None,
                   help="with --predict-from machine, machine+profile or machine+step: the machine file "
                        "(default: experiments/data/machines/h200xN.toml)")
    p.add_argument("--drop-host-keys", default=None,
                   help="with --predict-from machine: leave these [host] keys of the machine file out "
                        "(comma-separated), to predict with the model they refine")
    p.add_argument("--figure", default=None, help="where to write the figure (default: "
                                                   "experiments/out/e03/predicted_vs_measured.png)")
    p.add_argument("--cpu-rates-only", action="store_true",
                   help="only re-measure the CPU optimizer rates into the profiles under --out")
    a = p.parse_args()
    if a.cpu_rates_only:
        return remeasure_cpu_rates(Path(a.out))
    if a.measure:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        measure([int(x) for x in a.gpus.split(",")], out, mem_cap_gib=a.mem_cap_gib,
                sizes=tuple(a.sizes.split(",")), schedules=tuple(a.schedules.split(",")),
                optimizer_threads=a.optimizer_threads, grad_fence=a.grad_fence, copy_order=a.copy_order)
        return
    data = measured_folder(a.data)
    machine = Path(a.machine) if a.machine else None
    if a.drop_host_keys:
        if machine is None:
            sys.exit("--drop-host-keys needs --machine FILE")
        machine = machine_without(machine, a.drop_host_keys.split(","))
    rows, by_class = compare(a.predict_from, data, machine)
    if not rows:
        sys.exit(f"no measured data under {data}; run with --measure on a GPU machine first")
    report(rows, by_class, a.predict_from, Path(a.figure) if a.figure else None, library=data.resolve() == DATA.resolve())


if __name__ == "__main__":
    main()
