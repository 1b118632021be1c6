"""The host STEP's parts in measured RoundPipe runs, lease against lease (issue 14).

    python3 experiments/e03_step_parts.py FOLDER [FOLDER ...]

For every RoundPipe and RoundPipe-sync trace in each folder: the steady iteration, and over the decoder
layers' STEPs of the steady iterations the mean STEP and the mean of its three parts as rpexec timed them
(trace.meta["step_parts"]: summing the staged gradients, AdamW, refreshing the upload copy), with the
STEP thread count. Traces from before rpexec recorded the parts print the STEP only. The same run in
several folders (leases) shows how much the host moves between leases of one machine kind."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments._common import measured_folder  # noqa: E402
from rpsim.sim.trace import Trace, load_trace  # noqa: E402
from rpsim.validate_run import steady_iteration_s  # noqa: E402

PARTS = ("accumulate_s", "adam_s", "refresh_s")


def decoder_step_ms(trace: Trace) -> float:
    """Mean decoder-layer STEP (not the embedding's, not the head's) over the steady iterations."""
    steady = set(trace.meta["steady_iterations"])
    steps = [e for e in trace.events if e.kind == "STEP" and e.it in steady]
    last = max(e.stage for e in steps)
    return statistics.mean(e.end_s - e.start_s for e in steps if 0 < e.stage < last) * 1e3


def decoder_parts_ms(trace: Trace) -> dict[str, float] | None:
    parts = trace.meta.get("step_parts")
    if not parts or not parts["layer"]:
        return None
    steady, last = set(trace.meta["steady_iterations"]), max(parts["layer"])
    rows = [i for i, (layer, it) in enumerate(zip(parts["layer"], parts["iteration"], strict=True))
            if it in steady and 0 < layer < last]
    return {k: statistics.mean(parts[k][i] for i in rows) * 1e3 for k in PARTS}


def main(folders: list[str]) -> None:
    print(f"{'run':34s} {'folder':44s} {'iter_s':>7s} {'STEP_ms':>8s} {'sum':>7s} {'adam':>6s} {'refresh':>7s} threads")
    shown = dict(zip((str(measured_folder(f)) for f in folders), folders, strict=True))  # a folder or a .tar.gz
    folders = list(shown)
    for path in sorted({p.name for f in folders for p in Path(f).glob("*roundpipe*-trace.json")}):
        for f in folders:
            file = Path(f) / path
            if not file.exists():
                continue
            t = load_trace(file)
            parts = decoder_parts_ms(t)
            cols = (f"{parts['accumulate_s']:7.1f} {parts['adam_s']:6.1f} {parts['refresh_s']:7.1f}" if parts
                    else f"{'-':>7s} {'-':>6s} {'-':>7s}")
            print(f"{path.removesuffix('-trace.json'):34s} {shown[f][-44:]:44s} {steady_iteration_s(t):7.3f} "
                  f"{decoder_step_ms(t):8.1f} {cols} {t.meta.get('optimizer_threads', '?')}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
