"""What the fast evaluator knows about one scenario variant (model, server, microbatch size, recompute):
per-layer prefix sums of times and bytes, the server's effective copy rates and link capacities, the
optimizer's speed and the memory capacities. Built once per variant and shared by every candidate."""
from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rpsim.costs.cpu_optimizer import CpuOptimizerRates, cpu_optimizer_rates
from rpsim.costs.optimizer_threads import streamed_plan_step_threads
from rpsim.scenario import Scenario
from rpsim.sim.action_costs import gpu_step_s_per_param
from rpsim.sim.topology import build_topology


class Prefix:
    """Sums over contiguous layer ranges in O(1)."""

    __slots__ = ("p",)

    def __init__(self, values: Sequence[float]) -> None:
        self.p = [0.0, *itertools.accumulate(float(v) for v in values)]

    def __call__(self, a: int, b: int) -> float:
        return self.p[b] - self.p[a]


@dataclass(frozen=True)
class Links:
    """Copy rates of one GPU while every GPU copies both ways at once (the RoundPipe steady state), the
    per-direction link rate, and per shared resource the bytes it carries per byte each GPU moves."""

    h2d_bytes_per_s: float
    d2h_bytes_per_s: float
    first_load_bytes_per_s: float  # one GPU's upload rate while every GPU uploads and none downloads
    link_h2d_bytes_per_s: float
    link_d2h_bytes_per_s: float
    duplex: float
    latency_s: float
    p2p_bytes_per_s: float | None
    shared: tuple[tuple[float, float, float], ...]  # (capacity, h2d coefficient, d2h coefficient)

    def volume_s(self, h2d_bytes: float, d2h_bytes: float) -> float:
        """Least time to move these mean per-GPU bytes: each GPU's link (both directions overlapping at
        the duplex rate, the rest alone) and every shared resource at full capacity. A lower bound."""
        th, td = h2d_bytes / self.link_h2d_bytes_per_s, d2h_bytes / self.link_d2h_bytes_per_s
        both = min(th, td)
        link = both / self.duplex + (max(th, td) - both)
        shared = max(((h2d_bytes * a + d2h_bytes * b) / cap for cap, a, b in self.shared), default=0.0)
        return max(link, shared)


def links_of(sc: Scenario) -> Links:
    topo = build_topology(sc.server, sc.profile)
    n = sc.server.n_gpus
    coef: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for g in range(n):
        for k, paths in enumerate((topo.h2d_paths[g], topo.d2h_paths[g])):
            for path in paths:
                for r in path:
                    coef[r][k] += 1.0 / len(paths)
    link_h = min(topo.capacity_bytes_per_s[f"g{g}.h2d"] for g in range(n))
    link_d = min(topo.capacity_bytes_per_s[f"g{g}.d2h"] for g in range(n))
    shared = tuple((topo.capacity_bytes_per_s[r], a, b) for r, (a, b) in sorted(coef.items())
                   if not r.startswith("g"))
    # One GPU's rate when all copy both ways: its own link at the duplex rate, or its fair share of
    # the busiest shared resource (max-min fairness with equal demands gives equal shares).
    share = min((cap / (a + b) for cap, a, b in shared), default=float("inf"))
    uploads = min((cap / a for cap, a, _b in shared if a), default=float("inf"))
    return Links(min(link_h * topo.duplex_factor, share), min(link_d * topo.duplex_factor, share),
                 min(link_h, uploads), link_h, link_d, topo.duplex_factor, topo.latency_s,
                 topo.p2p_bytes_per_s, shared)


@dataclass(frozen=True)
class FastContext:
    n_gpus: int
    n_mb: int
    tokens_per_iteration: int
    recompute: str
    f: Prefix  # forward seconds
    b: Prefix  # backward seconds, no recompute
    r: Prefix  # recompute seconds
    weight: Prefix
    grad: Prefix
    optim: Prefix
    act: Prefix  # activations saved for backward without recomputation, per microbatch
    act_max: tuple[float, ...]  # per layer, for working-set maxima over a range
    bwd_extra: tuple[float, ...]  # per layer: gradients its backward holds beyond the saved activations
    stage_walk: tuple[float, ...]  # per layer j: act(0, j + 1) + bwd_extra[j] (backward_work, stage grain)
    layer_walk: tuple[float, ...]  # per layer j: act_max[j] + bwd_extra[j] (backward_work, layer grain)
    fwd_work: tuple[float, ...]  # per layer: the most a forward without grad holds at once
    inp: tuple[float, ...]  # the activation entering each pipeline layer, per microbatch
    inp_sum: Prefix
    params: Prefix  # trainable parameters
    resident: Prefix  # of them, in tensors whose accumulation fits the host's cache (rpsim.costs.cpu_optimizer)
    n_layers: int  # pipeline layers (embedding, transformer layers, head)
    links: Links
    cpu: CpuOptimizerRates
    cpu_async: CpuOptimizerRates  # at an async RoundPipe plan's STEP thread count (rpsim.costs.optimizer_threads)
    gpu_step_s_per_param: float
    gpu_memory_bytes: float
    host_memory_bytes: float

    def boundary(self, layer: int) -> float:
        """The activation entering pipeline layer `layer` (0 at the model's two ends)."""
        return self.inp[layer] if 0 < layer < self.n_layers else 0.0

    def max_act(self, a: int, b: int) -> float:
        return max(self.act_max[a:b])

    def forward_work(self, a: int, b: int) -> float:
        return max(self.fwd_work[a:b])

    def backward_work(self, a: int, b: int, one_layer_at_a_time: bool) -> float:
        """rpsim.sim.memory.backward_peak_bytes with no gradients made (the caller counts them in full):
        the walk from the top layer down, each layer's transient over the saved activations of the layers
        not yet walked (stage grain: layers a..j, act(a, j + 1) + extra[j]), or over its own alone (layer
        grain). Both from per-layer tables, one max in C per call: it runs per slot of every candidate."""
        if one_layer_at_a_time:
            return max(self.layer_walk[a:b])
        return max(self.stage_walk[a:b]) - self.act.p[a]


def context_of(sc: Scenario) -> FastContext:
    layers = sc.costs.layers
    cpu = cpu_optimizer_rates(sc.server.host, sc.profile, sc.server.host_dram_bytes_per_s)
    inp = tuple(x.input_bytes for x in layers)
    return FastContext(
        n_gpus=sc.server.n_gpus, n_mb=sc.training.n_mb, tokens_per_iteration=sc.training.tokens_per_iteration,
        recompute=sc.training.recompute, f=Prefix([x.forward_s for x in layers]),
        b=Prefix([x.backward_s for x in layers]), r=Prefix([x.recompute_s for x in layers]),
        weight=Prefix([x.weight_bytes for x in layers]), grad=Prefix([x.grad_bytes for x in layers]),
        optim=Prefix([x.optim_bytes for x in layers]), act=Prefix([x.activation_bytes for x in layers]),
        act_max=tuple(x.activation_bytes for x in layers),
        bwd_extra=tuple(x.backward_extra_bytes for x in layers),
        stage_walk=tuple(saved_up_to + x.backward_extra_bytes for saved_up_to, x in
                         zip(itertools.accumulate(float(x.activation_bytes) for x in layers), layers)),
        layer_walk=tuple(x.activation_bytes + x.backward_extra_bytes for x in layers),
        fwd_work=tuple(x.forward_transient_bytes for x in layers), inp=inp, inp_sum=Prefix(inp),
        params=Prefix([x.trainable_params for x in layers]),
        # (a profiled layer's residency at all cores; the async STEP's fewer threads move it little)
        resident=Prefix([cpu.layer_resident_params(x.trainable_params, x.optimizer_tensors) for x in layers]),
        n_layers=len(layers),
        links=links_of(sc),
        cpu=cpu,
        cpu_async=cpu_optimizer_rates(sc.server.host, sc.profile, sc.server.host_dram_bytes_per_s,
                                      streamed_plan_step_threads(sc.server.host.cores, sc.server.n_gpus, True)),
        gpu_step_s_per_param=gpu_step_s_per_param(sc.server.gpu),
        gpu_memory_bytes=sc.server.gpu.memory_bytes, host_memory_bytes=sc.server.host.dram_bytes)
