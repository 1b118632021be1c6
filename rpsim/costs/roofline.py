"""Kernel times from a roofline: max(FLOPs / (peak · efficiency), bytes / memory bandwidth, floor).

Roofline model: Williams, Waterman, Patterson, CACM 2009. A GEMM's compute rate is the GPU's measured
rate at that shape where a table exists (gemm_tables.toml, or a machine file from `rpexec calibrate`;
rpsim.specs.gemm_table), else peak times the GPU's efficiency curve by FLOPs (gpus.toml). Backward
GEMMs are timed at their own shapes: for Y = X W with X (m x k) and W (k x n), the input gradient
dX = dY W^T is an (m, k, n) GEMM and the weight gradient dW = X^T dY a (k, n, m) one. FlashAttention reaches a lower fraction of peak than plain GEMMs: about 0.73 of the A100's
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
    return _shape_time_s(g.m, g.n, g.k, g.count, gpu, precision)


def gemm_backward_time_s(g: Gemm, gpu: GPUSpec, precision: str) -> float:
    """Input gradient, plus the weight gradient when the weight trains (frozen LoRA bases skip it)."""
    table = gpu.gemm_table(precision)
    if table is None:  # a curve by FLOPs alone: both backward GEMMs have the forward's FLOPs
        return gemm_time_s(g, gpu, precision) * (2 if g.trainable else 1)
    dgrad = _shape_time_s(g.m, g.k, g.n, g.count, gpu, precision)
    return dgrad + (_shape_time_s(g.k, g.n, g.m, g.count, gpu, precision) if g.trainable else 0.0)


def _shape_time_s(m: int, n: int, k: int, count: int, gpu: GPUSpec, precision: str) -> float:
    flops = 2.0 * m * n * k
    table = gpu.gemm_table(precision)
    if table is not None:
        rate = table.rate_flops_per_s(m, n, k)
    else:
        rate = gpu.peak_flops_per_s(precision) * gpu.efficiency.at(flops)
    compute_s = flops * count / rate
    memory_s = BYTES_PER_ELEMENT * (m * k + k * n + m * n) * count / gpu.memory_bandwidth_bytes_per_s
    return max(compute_s, memory_s, gpu.kernel_floor_s)


def gemm_bytes(g: Gemm) -> float:
    return BYTES_PER_ELEMENT * (g.m * g.k + g.k * g.n + g.m * g.n) * g.count


def attention_time_s(causal_flops: float, gpu: GPUSpec, precision: str, backward: bool) -> float:
    """One attention kernel of `causal_flops` (gemms.attention_flops forward, twice that backward)."""
    measured = gpu.attention_flops_per_s(precision)  # calibrated rates count the causal half too
    if measured is not None:
        return max(causal_flops / measured[1 if backward else 0], gpu.kernel_floor_s)
    ratio = ATTENTION_BWD_EFFICIENCY_RATIO if backward else ATTENTION_FWD_EFFICIENCY_RATIO
    eff = gpu.efficiency.at(causal_flops) * ratio
    return max(causal_flops / (gpu.peak_flops_per_s(precision) * eff), gpu.kernel_floor_s)


def elementwise_bytes_per_s(gpu: GPUSpec) -> float:
    """The calibrated rate of memory-bound kernels, else the DRAM peak times the usual efficiency."""
    return gpu.elementwise_bytes_per_s or gpu.memory_bandwidth_bytes_per_s * ELEMENTWISE_BANDWIDTH_EFFICIENCY


def elementwise_time_s(n_bytes: float, gpu: GPUSpec, n_kernels: int, strided_bytes: float = 0.0,
                       backward: bool = False) -> float:
    """Memory-bound kernels: `n_bytes` over contiguous tensors at the contiguous rate, `strided_bytes`
    (rpsim.costs.layer_costs.strided_elementwise_bytes) at the GPU's measured strided rate of a forward
    or a backward; no less than n_kernels launches' floor."""
    rate = elementwise_bytes_per_s(gpu)
    if gpu.strided_elementwise_bytes_per_s is None:
        # No strided rate measured (the presets, machine files from before the probe): the strided
        # kernels are priced at the contiguous rate, one sum as before the split, so figures do not move.
        memory_s = (n_bytes + strided_bytes) / rate
    else:
        memory_s = n_bytes / rate + strided_bytes / gpu.strided_elementwise_bytes_per_s[1 if backward else 0]
    return max(memory_s, n_kernels * gpu.kernel_floor_s)
