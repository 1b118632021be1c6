"""e03's RoundPipe runs, predicted again with the host STEP as fast as it ran in each run (issue 14).

    python3 experiments/e03_given_step.py --data FOLDER_OR_TAR --machine MACHINE.toml [...]   # ~6 s per set

Splits a prediction's error into the host STEP's speed and everything else. For every RoundPipe and
RoundPipe-sync run of each measured set, predicted from the machine file and the run's own size profile
(`--predict-from machine+profile`, whose cpu.layer_steps time the STEP over the model's layer): first as
it is, then with every host-STEP rate slowed by the run's measured STEP seconds per iteration over
rpsim's simulated ones for the same plan (rpsim.host_step_speed, as `rpsim validate` does; one rescaling:
the simulated STEP includes the modelled contention, so the factor is what the model misses). What
remains is the error of everything but the STEP's speed: the GPU work, the copies, the dependencies,
the overlap. The factor is taken from the
measured run, so the second prediction is a diagnosis, not a prediction a user could make before the run.
Prints one row per run and the medians."""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments._common import measured_folder
from experiments.e03_sim_vs_real import _block_iteration_s, prediction_setup, steady_prediction


def step_busy_s(events) -> float:
    """Seconds of host STEP in `events` (every layer's: the embedding's and the head's too)."""
    return sum(e.end_s - e.start_s for e in events if e.kind == "STEP")


def predict(plan, sc) -> tuple[float, float]:
    """(steady iteration, STEP seconds per iteration) rpsim predicts for `plan` in scenario `sc`."""
    from rpsim.sim.simulate import simulate
    sim = simulate(plan, sc, stop_at_steady=False)
    iteration = (steady_prediction(plan, sc).metrics if plan.optimizer == "async" else sim.metrics)["iteration_s"]
    return iteration, step_busy_s(sim.trace.events) / sim.plan.n_iters


def rows_of(data: Path, machine: Path) -> list[dict]:
    from rpsim.host_step_speed import with_host_step_slower
    from rpsim.ir.planio import load_plan
    from rpsim.scenario import scenario_from_setup
    from rpsim.sim.trace import load_trace
    from rpsim.validate_run import steady_iteration_s
    out = []
    for plan_path in sorted(data.glob("*-plan.json")):
        plan = load_plan(plan_path)
        if plan.schedule not in ("roundpipe", "roundpipe-sync"):
            continue
        trace = load_trace(str(plan_path).replace("-plan.json", "-trace.json"))
        steady = set(trace.meta["steady_iterations"])
        measured_step = step_busy_s([e for e in trace.events if e.it in steady]) / len(steady)
        measured = steady_iteration_s(trace) if plan.optimizer == "async" else _block_iteration_s(trace)
        sc = scenario_from_setup(prediction_setup(plan.setup, plan.n_gpus, "machine+profile", data, machine))
        iteration, step = predict(plan, sc)
        factor = measured_step / step
        given, _ = predict(plan, with_host_step_slower(sc, factor))
        out.append({"run": plan_path.name.removesuffix("-plan.json"), "measured_s": measured,
                    "predicted_s": iteration, "step_factor": factor, "given_step_s": given})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, help="a measured set (folder or .tar.gz); repeatable")
    ap.add_argument("--machine", action="append", required=True, help="its machine file, one per --data")
    a = ap.parse_args()
    if len(a.data) != len(a.machine):
        sys.exit("e03_given_step.py: give one --machine per --data")
    rows = []
    print(f"{'set':28s} {'run':34s} {'meas_s':>7s} {'pred_s':>7s} {'err':>7s} {'STEP x':>7s} {'given':>7s} {'err':>7s}")
    for data, machine in zip(a.data, a.machine, strict=True):
        for r in rows_of(measured_folder(data), Path(machine)):
            r["set"] = Path(data).name
            rows.append(r)
            err = r["predicted_s"] / r["measured_s"] - 1
            given = r["given_step_s"] / r["measured_s"] - 1
            print(f"{r['set'][:28]:28s} {r['run']:34s} {r['measured_s']:7.3f} {r['predicted_s']:7.3f} {err:+7.1%} "
                  f"{r['step_factor']:7.2f} {r['given_step_s']:7.3f} {given:+7.1%}", flush=True)
    for label, key in (("as predicted", "predicted_s"), ("given the run's STEP speed", "given_step_s")):
        errs = [abs(r[key] / r["measured_s"] - 1) for r in rows]
        print(f"{label}: median {statistics.median(errs):.1%}, max {max(errs):.1%} over {len(errs)} runs")
    factors = [r["step_factor"] for r in rows]
    print(f"the runs' STEP / rpsim's: median {statistics.median(factors):.2f}, range {min(factors):.2f}-{max(factors):.2f}")


if __name__ == "__main__":
    main()
