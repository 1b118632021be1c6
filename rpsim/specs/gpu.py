"""GPU spec: peak tensor rates per precision, memory, and how efficiently GEMMs of a size reach peak."""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

from rpsim.errors import SpecError
from rpsim.specs.gemm_table import GemmRateTable

# Precision names: bf16/fp16 with fp32 accumulate (the usual training setting), fp16 with fp16
# accumulate (the RoundPipe paper's setting), and plain fp32 (no tensor cores).
PRECISIONS = ("bf16", "fp16", "fp16-acc16", "fp32")


@dataclass(frozen=True)
class EfficiencyCurve:
    """Fraction of peak reached by one GEMM, piecewise linear in log10(GEMM FLOPs).

    Small GEMMs are launch- and tile-quantisation-bound; large ones approach the measured plateau.
    """

    points: tuple[tuple[float, float], ...]  # (gemm_flops, efficiency), ascending in flops

    def __post_init__(self) -> None:
        if not self.points:
            raise SpecError("efficiency curve needs at least one (flops, efficiency) point")
        xs = [p[0] for p in self.points]
        if xs != sorted(xs) or any(x <= 0 for x in xs):
            raise SpecError(f"efficiency curve flops must be positive and ascending, got {xs}")
        if any(not 0 < p[1] <= 1.0 for p in self.points):
            raise SpecError(f"efficiency values must lie in (0, 1], got {[p[1] for p in self.points]}")

    def at(self, gemm_flops: float) -> float:
        pts = self.points
        if gemm_flops <= pts[0][0]:
            return pts[0][1]
        if gemm_flops >= pts[-1][0]:
            return pts[-1][1]
        x = math.log10(gemm_flops)
        for (f0, e0), (f1, e1) in pairwise(pts):
            if f0 <= gemm_flops <= f1:
                x0, x1 = math.log10(f0), math.log10(f1)
                return e0 + (e1 - e0) * (x - x0) / (x1 - x0)
        raise AssertionError("unreachable: curve lookup fell through")


@dataclass(frozen=True)
class GPUSpec:
    name: str
    bf16_flops_per_s: float  # dense, fp32 accumulate; fp16 with fp32 accumulate runs at the same rate
    fp16_acc16_flops_per_s: float  # dense, fp16 accumulate
    fp32_flops_per_s: float  # dense fp32 (non-tensor-core or TF32 off)
    memory_bytes: float
    memory_bandwidth_bytes_per_s: float
    efficiency: EfficiencyCurve
    kernel_floor_s: float  # smallest time any kernel takes (launch + tail)
    pcie_generation: int
    pcie_width: int
    nvlink_bytes_per_s: float | None  # bidirectional NVLink bandwidth, None when absent
    source: str
    # Measured GEMM rates by shape, per precision (gemm_tables.toml or a machine file); where a
    # precision has none, the efficiency curve above prices GEMMs.
    gemm_tables: tuple[tuple[str, GemmRateTable], ...] = ()
    # Measured causal FlashAttention rates, FLOP/s of the causal work: (precision, forward, backward).
    attention_rates: tuple[tuple[str, float, float], ...] = ()
    # Measured device-memory copy rate (reads + writes), what elementwise kernels reach; None: a fixed
    # fraction of the datasheet bandwidth (rpsim.costs.roofline).
    elementwise_bytes_per_s: float | None = None
    # Measured rate of the memory-bound kernels that torch runs over strided tensors in a layer (RoPE on
    # the transposed q and k, GQA's repeat of k and v, the attention layout copies), forward and backward,
    # in the bytes rpsim.costs.layer_costs.strided_elementwise_bytes counts per second; None: priced at
    # the contiguous rate above (rpsim.costs.roofline).
    strided_elementwise_bytes_per_s: tuple[float, float] | None = None

    def gemm_table(self, precision: str) -> GemmRateTable | None:
        return _by_precision(self.gemm_tables, precision)

    def attention_flops_per_s(self, precision: str) -> tuple[float, float] | None:
        for name, fwd, bwd in self.attention_rates:
            if name in _SAME_TENSOR_RATE.get(precision, (precision,)):
                return fwd, bwd
        return None

    def peak_flops_per_s(self, precision: str) -> float:
        rates = {
            "bf16": self.bf16_flops_per_s,
            "fp16": self.bf16_flops_per_s,
            "fp16-acc16": self.fp16_acc16_flops_per_s,
            "fp32": self.fp32_flops_per_s,
        }
        if precision not in rates:
            raise SpecError(f"unknown precision {precision!r}; valid choices: {', '.join(PRECISIONS)}")
        return rates[precision]


# bf16 and fp16 (both with fp32 accumulate) run at one tensor-core rate (NVIDIA Hopper and Ada
# whitepapers), so a table measured in either serves the other; fp16 with fp16 accumulate and fp32 do not.
_SAME_TENSOR_RATE = {"bf16": ("bf16", "fp16"), "fp16": ("fp16", "bf16")}


def _by_precision(tables: tuple[tuple[str, GemmRateTable], ...], precision: str) -> GemmRateTable | None:
    for wanted in _SAME_TENSOR_RATE.get(precision, (precision,)):
        for name, table in tables:
            if name == wanted:
                return table
    return None
