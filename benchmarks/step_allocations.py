"""Does the host STEP of one layer shape change with the memory it is given, and with how much of the
last-level cache its tensors fill? (issue 14)

Across leases of one H200 host the same runs' STEPs moved by up to 50% while `rpexec calibrate`'s
cache-resident probe (tensors filling half the L3) did not move (benchmarks/notes-rpexec.md, session
12). One guess: a tensor whose fp32 gradient and scratch fill most of the cache keeps more or less of it
depending on the physical pages it is given. This probe, in one process:

- re-allocates the whole host state of a layer (`HostParams`: master weights, Adam state, fp32 gradient
  buffers, scratch, staged-gradient pools) `--allocations` times and times its STEP alone each time;
- does so for decoder layers whose MLP tensors fill different shares of the cache (`--mlp-widths`).

    python3 benchmarks/step_allocations.py --out DIR [--threads 16] [--allocations 4] [--mlp-widths 6144,8192,10240]
    THP_MEM_ALLOC_ENABLE=1 python3 benchmarks/step_allocations.py ...   # torch's CPU tensors on 2 MiB pages

With 4 KiB pages the physical pages of a tensor, and so the cache sets its lines fall in, differ from
one allocation to the next; with 2 MiB pages (transparent huge pages, which torch's CPU allocator asks
for when THP_MEM_ALLOC_ENABLE=1) every set index bit lies inside the page, so a tensor covers the sets
evenly. Each row records the process's AnonHugePages after its STEPs, to show which one a run got.

Prints per shape and allocation the median STEP, its accumulation per parameter and staged gradient, and
the MLP tensor's working set (8 B per parameter) as a share of the cache; writes step_allocations.json."""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from step_conditions import N_STAGED, decoder_host_state, probe_args, staging_source, step_parts_s

from rpexec.profile import last_level_cache_bytes
from rpsim.costs.cpu_optimizer import ACCUMULATOR_BYTES_PER_PARAM


def anon_huge_pages_mib() -> float:
    """The process's anonymous memory on transparent huge pages (0 where the kernel does not say)."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^AnonHugePages:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--allocations", type=int, default=4)
    ap.add_argument("--mlp-widths", default="6144,8192,10240", help="hidden 3072 (llama-1.8b's); 8192 is its MLP")
    ap.add_argument("--reps", type=int, default=3)
    a, out = probe_args(ap)
    cache = last_level_cache_bytes()
    rows = []
    for mlp in (int(x) for x in a.mlp_widths.split(",")):
        fill = ACCUMULATOR_BYTES_PER_PARAM * 3072 * mlp / cache if cache else float("nan")
        for k in range(a.allocations):
            host, shapes, params = decoder_host_state(3072, 24, 8, mlp)
            source = staging_source(max(shape.numel() for shape in shapes[0].values()))
            times = step_parts_s(host, shapes, a.reps, False, source, torch.zeros(1))
            step, accumulate = (statistics.median(t[i] for t in times) for i in (0, 1))
            rows.append({"mlp": mlp, "allocation": k, "layer_params": params, "mlp_tensor_cache_share": fill,
                         "threads": torch.get_num_threads(), "step_s": step, "accumulate_s": accumulate,
                         "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
                         "anon_huge_pages_mib": anon_huge_pages_mib(),
                         "accumulate_ns_per_param_per_staged": accumulate / params / N_STAGED * 1e9})
            print(f"mlp {mlp:5d} (MLP tensor {fill:.0%} of the cache) allocation {k}: STEP {step * 1e3:7.1f} ms, "
                  f"sum {accumulate * 1e3:7.1f} ms = {rows[-1]['accumulate_ns_per_param_per_staged']:.3f} ns "
                  f"per parameter and staged gradient ({rows[-1]['anon_huge_pages_mib']:.0f} MiB on huge pages)", flush=True)
            del host, source
            gc.collect()
    (out / "step_allocations.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
