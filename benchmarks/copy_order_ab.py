"""How the copy order shows in measured RoundPipe runs (rpexec.copy_order): per run, how many of the
backwards' ACT_OUTs ran behind their own gradient OFFLOADs, how long the compute lane idled per steady
iteration, and the steady iteration.

    python3 benchmarks/copy_order_ab.py SET [SET ...]   # folders or .tar.gz of e03 runs (plan + trace)

Measure the sets on the GPU machine with e03, once per order, interleaved in one lease (the host STEP
drifts by 10-20% within a lease, so runs far apart compare badly):

    python3 experiments/e03_sim_vs_real.py --measure --gpus 1 --sizes llama-1.8b --schedules roundpipe-sync \\
        --copy-order as-issued --out B
    python3 experiments/e03_sim_vs_real.py --measure --gpus 1 --sizes llama-1.8b --schedules roundpipe-sync \\
        --copy-order activations-first --out A

Prints one row per run; asserts nothing."""
from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._common import measured_folder
from rpsim.sim.trace import Trace, load_trace
from rpsim.validate_run import steady_iteration_s


def act_outs_behind_their_offloads(trace: Trace) -> tuple[int, int]:
    """(backward ACT_OUTs that started after an OFFLOAD of the same backward had started, backward ACT_OUTs
    whose backward downloads gradients), over the iterations after the first."""
    offloads = defaultdict(list)
    for e in trace.events:
        if e.kind == "OFFLOAD" and e.it >= 1:
            offloads[(e.gpu, e.it, e.stage, e.mb)].append(e)
    behind = paired = 0
    for e in trace.events:
        if e.kind == "ACT_OUT" and e.it >= 1 and ".pB" in e.action:
            mine = offloads.get((e.gpu, e.it, e.stage, e.mb))
            if mine:
                paired += 1
                behind += any(o.start_s < e.start_s for o in mine)
    return behind, paired


def compute_idle_s(trace: Trace) -> float:
    """Mean idle seconds of each GPU's compute lane per iteration, from its first to its last compute action,
    over the iterations after the first (FREEs take no time and are left out)."""
    spans = defaultdict(list)
    for e in trace.events:
        if e.lane == "compute" and e.kind != "FREE" and e.it >= 1:
            spans[(e.gpu, e.it)].append(e)
    idle = [max(e.end_s for e in evs) - min(e.start_s for e in evs) - sum(e.end_s - e.start_s for e in evs)
            for evs in spans.values()]
    return statistics.mean(idle)


def rows(folder: Path) -> list[str]:
    out = []
    for trace_path in sorted(folder.glob("*-trace.json")):
        trace = load_trace(trace_path)
        behind, paired = act_outs_behind_their_offloads(trace)
        asked = trace.meta.get("copy_order", "-")  # traces before the order was recorded: the set names it
        out.append(f"{trace_path.name.removesuffix('-trace.json'):34s} {steady_iteration_s(trace):8.3f} "
                   f"{compute_idle_s(trace):9.3f} {behind:5d} / {paired:<5d} {asked}")
    return out


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(f"{'run':34s} {'iter_s':>8s} {'idle_s/it':>9s} {'ACT_OUT behind':>14s} copy order asked")
    for arg in sys.argv[1:]:
        print(f"# {arg}")
        for row in rows(measured_folder(arg)):
            print(row)


if __name__ == "__main__":
    main()
