"""Speed of FlowNetwork and allocate_rates on an 8-GPU PCIe server topology; prints figures, asserts nothing.

Topology: per GPU an h2d and a d2h resource (a duplex pair), 4 GPUs per socket, one DRAM resource per
socket and an inter-socket link crossed when the host buffer sits on the other socket.
Run: python3 benchmarks/bench_flow_network.py [--transfers N] [--seed S]
"""
from __future__ import annotations

import argparse
import random
import time

import simpy

from rpsim.sim.network import FlowNetwork
from rpsim.sim.sharing import Flow, allocate_rates

N_GPUS = 8
GPUS_PER_SOCKET = 4


def topology() -> tuple[dict[str, float], list[tuple[str, str, float, float]]]:
    # PCIe 4.0 x16 ~25 GB/s per direction, H2D ~13.5 GB/s while D2H runs (reference/hardware.md);
    # DRAM and inter-socket figures are round placeholders of the right order.
    capacity = {f"{d}{g}": 25e9 for g in range(N_GPUS) for d in ("h2d", "d2h")}
    capacity |= {"dram0": 80e9, "dram1": 80e9, "upi": 40e9}
    pairs = [(f"h2d{g}", f"d2h{g}", 0.54, 0.9) for g in range(N_GPUS)]
    return capacity, pairs


def random_path(rng: random.Random, gpu: int, upload: bool) -> tuple[str, ...]:
    socket = rng.randrange(2)
    hop = ("upi",) if socket != gpu // GPUS_PER_SOCKET else ()
    if upload:
        return (f"dram{socket}", *hop, f"h2d{gpu}")
    return (f"d2h{gpu}", *hop, f"dram{socket}")


def worker(env: simpy.Environment, net: FlowNetwork, rng: random.Random, gpu: int, upload: bool, n: int):
    """One copy stream: back-to-back transfers of 1 MB-256 MB (log-uniform), a short gap between."""
    for _ in range(n):
        n_bytes = 10 ** rng.uniform(6, 8.4)
        yield net.transfer(random_path(rng, gpu, upload), n_bytes, rng.randrange(2), rng.uniform(0, 1e-4))


def bench_network(n_transfers: int, seed: int) -> None:
    rng = random.Random(seed)
    capacity, pairs = topology()
    env = simpy.Environment()
    net = FlowNetwork(env, capacity, pairs)
    streams = [(g, up) for g in range(N_GPUS) for up in (True, False)]
    for g, up in streams:
        env.process(worker(env, net, random.Random(rng.random()), g, up, n_transfers // len(streams)))
    start = time.perf_counter()
    env.run()
    wall_s = time.perf_counter() - start
    busiest = max(net.busy_s, key=net.busy_s.__getitem__)
    print(f"FlowNetwork: {net.n_completed} transfers over {len(streams)} streams in {wall_s:.3f} s wall "
          f"-> {net.n_completed / wall_s:,.0f} flows completed/s (simulated {env.now:.3f} s; "
          f"busiest {busiest}: {net.busy_s[busiest] / env.now:.0%} busy)")


def bench_allocate(n_flows: int, n_calls: int, seed: int) -> None:
    rng = random.Random(seed)
    capacity, pairs = topology()
    flows = [Flow(i, random_path(rng, rng.randrange(N_GPUS), rng.random() < 0.5), rng.randrange(2))
             for i in range(n_flows)]
    start = time.perf_counter()
    for _ in range(n_calls):
        allocate_rates(flows, capacity, pairs)
    wall_s = time.perf_counter() - start
    print(f"allocate_rates: {n_flows} flows, {n_calls / wall_s:,.0f} calls/s ({wall_s / n_calls * 1e6:.1f} us each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bench_network(args.transfers, args.seed)
    for n_flows in (4, 16, 64):
        bench_allocate(n_flows, 20_000 // n_flows * 4, args.seed)


if __name__ == "__main__":
    main()
