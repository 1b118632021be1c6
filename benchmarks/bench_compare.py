"""Time `rpsim compare` end to end (all six schedules by default), in-process through rpsim.cli.main.main
and as a subprocess (interpreter start and imports included); prints figures, asserts nothing.

Targets: `rpsim compare --model llama-70b --gpus 4090x8` under 5 s on a 2-core machine (issue 4); 1.0 s
in-process and 1.5 s as a whole command (issue 18).
Wall time on a shared machine is noisy: the minimum of --repeat runs is the figure to compare, and CPU
time is printed beside it. `--dump FILE` writes the JSON rows of a fixed set of scenarios (every
fidelity, P2P and host-staged servers, 235B RoundPipe) for a before/after identity check:
    python3 benchmarks/bench_compare.py --dump after.json && cmp before.json after.json
Since session 8 compare simulates its schedules on every core (--jobs): the in-process CPU is then the
parent's alone; `--jobs 1` times the work in one process.
Run: python3 benchmarks/bench_compare.py [--model llama-70b] [--gpus 4090x8] [--repeat 3] [--jobs N] [--dump FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import rpsim
from rpsim.cli.main import main as rpsim_main

# (label, argv after `compare`): small but covering every path the simulator takes.
_235B = ",".join(["2"] * 47) + "|" + ",".join(["0"] + ["1"] * 94)  # 142 stage slots
DUMP_CASES = [
    ("llama-70b 4090x8 pcie", ["--model", "llama-70b", "--gpus", "4090x8"]),
    ("qwen3-1.7b 4090x4 ideal", ["--model", "qwen3-1.7b", "--gpus", "4090x4", "--fidelity", "ideal"]),
    ("qwen3-1.7b 4090x4 hop", ["--model", "qwen3-1.7b", "--gpus", "4090x4", "--fidelity", "hop"]),
    ("qwen3-1.7b 4090x4 pcie", ["--model", "qwen3-1.7b", "--gpus", "4090x4", "--global-batch", "32"]),
    ("qwen3-8b a800 nvlink", ["--model", "qwen3-8b", "--gpus", "a800x8-nvlink", "--global-batch", "32"]),
    ("qwen3-32b 4090x8 4 iters", ["--model", "qwen3-32b", "--gpus", "4090x8", "--global-batch", "32",
                                  "--iters", "4", "--schedules", "roundpipe,1f1b"]),
    ("qwen3-32b earliest-free", ["--model", "qwen3-32b", "--gpus", "4090x8", "--g0-rule", "earliest-free",
                                 "--schedules", "roundpipe-sync"]),
    ("qwen3-235b roundpipe", ["--model", "qwen3-235b-a22b", "--gpus", "4090x8", "--schedules", "roundpipe",
                              "--partition", _235B]),
]


def run_in_process(argv: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one `rpsim compare` through main()."""
    out = io.StringIO()
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rpsim_main(["compare", *argv])
    return time.perf_counter() - wall, time.process_time() - cpu, out.getvalue()


def run_subprocess(argv: list[str]) -> float:
    # Run from the directory holding the imported rpsim, so the child times the same code.
    root = Path(rpsim.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rpsim", "compare", *argv], cwd=root, env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - wall


def summary(label: str, values: list[float]) -> str:
    return (f"{label}: min {min(values):.2f} s, median {statistics.median(values):.2f} s "
            f"over {len(values)} runs")


def dump(path: str) -> None:
    rows = {}
    for label, argv in DUMP_CASES:
        wall, _, out = run_in_process([*argv, "--format", "json"])
        rows[label] = json.loads(out)
        print(f"  {label}: {wall:.2f} s", file=sys.stderr)
    Path(path).write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} scenarios' rows to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-70b")
    parser.add_argument("--gpus", default="4090x8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dump", default=None, help="write DUMP_CASES' JSON rows to this file and stop")
    parser.add_argument("--jobs", default=None, help="pass --jobs to compare (default: its own, every core); "
                        "with worker processes the in-process CPU is the parent's alone")
    args = parser.parse_args()
    if args.dump:
        dump(args.dump)
        return
    argv = ["--model", args.model, "--gpus", args.gpus] + (["--jobs", args.jobs] if args.jobs else [])
    print(f"rpsim compare {' '.join(argv)} (rpsim from {Path(rpsim.__file__).parent})")
    walls, cpus = [], []
    for _ in range(args.repeat):
        wall, cpu, _ = run_in_process(argv)
        walls.append(wall)
        cpus.append(cpu)
    print(summary("in-process wall", walls))
    print(summary("in-process CPU ", cpus))
    print(summary("subprocess wall", [run_subprocess(argv) for _ in range(args.repeat)]))


if __name__ == "__main__":
    main()
