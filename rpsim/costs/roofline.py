"""Kernel times from a roofline: max(FLOPs / (peak · efficiency), bytes / memory bandwidth, floor).

Roofline model: Williams, Waterman, Patterson, CACM 2009. The GEMM efficiency curve is the GPU's
(gpus.toml). FlashAttention reaches a lower fraction of peak than plain GEMMs: about 0.73 of the A100's
peak forward and 0.63 backward in FlashAttention-2 (Dao 2023, Sec. 4.1), against ~0.8 for large GEMMs;
we scale the GEMM curve by those ratios. Causal attention skips half of the score matrix (same paper).
"""
from __future__ import annotations

from rpsim.costs.gemms import Gemm
from rpsim.specs.gpu import GPUSpec

BYTES_PER_ELEMENT = 2  # fp16 / bf16 activations and weights
ATTENTION_FWD_EFFICIENCY_RATIO = 0.73 / 0.8
ATTENTION_BWD_EFFICIENCY_RATIO = 0.63 / 0.8
ELEMENTWISE_BANDWIDTH_EFFICIENCY = 0.8  # fused elementwise kernels reach ~80% of DRAM bandwidth


def gemm_time_s(g: Gemm, gpu: GPUSpec, precision: str) -> float:
    """One forward GEMM (all `count` copies run as one grouped launch)."""
    one = 2.0 * g.m * g.n * g.k
    compute_s = g.flops / (gpu.peak_flops_per_s(precision) * gpu.efficiency.at(one))
    bytes_moved = BYTES_PER_ELEMENT * (g.m * g.k + g.k * g.n + g.m * g.n) * g.count
    memory_s = bytes_moved / gpu.memory_bandwidth_bytes_per_s
    return max(compute_s, memory_s, gpu.kernel_floor_s)


def gemm_bytes(g: Gemm) -> float:
    return BYTES_PER_ELEMENT * (g.m * g.k + g.k * g.n + g.m * g.n) * g.count


def attention_time_s(flops_noncausal: float, gpu: GPUSpec, precision: str, backward: bool) -> float:
    causal_flops = flops_noncausal / 2 * (2 if backward else 1)
    ratio = ATTENTION_BWD_EFFICIENCY_RATIO if backward else ATTENTION_FWD_EFFICIENCY_RATIO
    eff = gpu.efficiency.at(causal_flops) * ratio
    return max(causal_flops / (gpu.peak_flops_per_s(precision) * eff), gpu.kernel_floor_s)


def elementwise_time_s(n_bytes: float, gpu: GPUSpec, n_kernels: int) -> float:
    return max(n_bytes / (gpu.memory_bandwidth_bytes_per_s * ELEMENTWISE_BANDWIDTH_EFFICIENCY),
               n_kernels * gpu.kernel_floor_s)
