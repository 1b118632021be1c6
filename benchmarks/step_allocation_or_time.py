"""Is a host STEP's speed a property of its allocation, or of the moment it runs? (issue 14)

benchmarks/step_allocations.py re-allocates a layer's host state and times each allocation in turn: its
spread (123-149 ms for the same llama-1.8b layer) could come from the memory each allocation was given,
or from what else used the host's shared last-level cache and DRAM while it ran (a 16-core lease of a
socket whose 300 MiB L3 other tenants share). This probe keeps `--allocations` host states alive at once
and times them round-robin for `--rounds` rounds: an allocation effect shows as rows (allocations) that
stay apart round after round, a time effect as columns (rounds) that move together.

    python3 benchmarks/step_allocation_or_time.py --out DIR [--threads 16] [--allocations 3] [--rounds 6] [--mlp 8192]

Prints the summation's ns per parameter and staged gradient per allocation and round, and how much of
its variance lies between allocations and how much between rounds (two-way, no interaction); writes
step_allocation_or_time.json."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from step_conditions import N_STAGED, decoder_host_state, probe_args, staging_source, step_parts_s


def variance_split(table: list[list[float]]) -> dict[str, float]:
    """Two-way split of a rows x columns table's variance: between rows, between columns, the rest."""
    grand = statistics.fmean(x for row in table for x in row)
    n_rows, n_cols = len(table), len(table[0])
    rows = sum(n_cols * (statistics.fmean(r) - grand) ** 2 for r in table)
    cols = sum(n_rows * (statistics.fmean(r[j] for r in table) - grand) ** 2 for j in range(n_cols))
    total = sum((x - grand) ** 2 for row in table for x in row)
    return {"between_allocations": rows / total, "between_rounds": cols / total,
            "rest": (total - rows - cols) / total} if total else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--allocations", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--mlp", type=int, default=8192, help="MLP width at hidden 3072 (llama-1.8b's: 8192)")
    a, out = probe_args(ap)
    hosts = [decoder_host_state(3072, 24, 8, a.mlp) for _ in range(a.allocations)]
    source = staging_source(max(shape.numel() for shape in hosts[0][1][0].values()))
    table = [[0.0] * a.rounds for _ in hosts]
    for r in range(a.rounds):
        for k, (host, shapes, params) in enumerate(hosts):
            times = step_parts_s(host, shapes, 1, False, source, torch.zeros(1))
            table[k][r] = statistics.median(t[1] for t in times) / params / N_STAGED * 1e9
        print(f"round {r}: " + "  ".join(f"{row[r]:.3f}" for row in table), flush=True)
    split = variance_split(table)
    print("ns per parameter and staged gradient, allocation x round:")
    for k, row in enumerate(table):
        print(f"  allocation {k}: " + " ".join(f"{x:.3f}" for x in row) + f"   mean {statistics.fmean(row):.3f}")
    print("variance share: " + ", ".join(f"{k} {v:.0%}" for k, v in split.items()))
    (out / "step_allocation_or_time.json").write_text(json.dumps(
        {"threads": torch.get_num_threads(), "mlp": a.mlp, "ns_per_param_per_staged": table, "variance_share": split},
        indent=1))


if __name__ == "__main__":
    main()
