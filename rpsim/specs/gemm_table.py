"""Measured GEMM rates by shape: a full grid over (m, n, k), interpolated in log2 of each dimension.

A transformer layer's GEMMs span a few shapes (tokens x widths), and how close a GPU gets to its peak
depends on the shape, not only on the FLOP count: a skinny K or N under-fills the tensor cores and tile
quantisation wastes part of the last wave. A table of rates measured at the shapes layers produce
(`rpexec calibrate`) captures that; between grid points the rate is trilinear in (log2 m, log2 n,
log2 k), and outside the grid it is clamped to the edge (a GEMM larger than any measured runs at the
largest measured shape's rate; a smaller one at the smallest's).
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rpsim.errors import SpecError


@dataclass(frozen=True)
class GemmRateTable:
    """Achieved FLOP/s of one (m x k) @ (k x n) GEMM at each grid shape."""

    ms: tuple[int, ...]
    ns: tuple[int, ...]
    ks: tuple[int, ...]
    flops_per_s: tuple[float, ...]  # row-major over (m, n, k)
    source: str = ""

    def __post_init__(self) -> None:
        for axis, values in (("m", self.ms), ("n", self.ns), ("k", self.ks)):
            if not values or list(values) != sorted(set(values)) or values[0] < 1:
                raise SpecError(f"GEMM table axis {axis} must be distinct positive sizes in ascending order, "
                                f"got {list(values)}")
        expected = len(self.ms) * len(self.ns) * len(self.ks)
        if len(self.flops_per_s) != expected:
            raise SpecError(f"GEMM table needs one rate per grid shape: {expected} "
                            f"({len(self.ms)} m x {len(self.ns)} n x {len(self.ks)} k), got {len(self.flops_per_s)}")
        bad = [r for r in self.flops_per_s if not (0 < r < math.inf)]
        if bad:
            raise SpecError(f"GEMM table rates must be finite and > 0 FLOP/s, got {bad[0]!r}")

    @classmethod
    def from_points(cls, points: Iterable[Sequence[float]], source: str = "",
                    where: str = "GEMM table") -> GemmRateTable:
        """From [m, n, k, tflops] rows covering a full grid, in any order."""
        rates: dict[tuple[int, int, int], float] = {}
        for row in points:
            if len(row) != 4:
                raise SpecError(f"{where}: each point is [m, n, k, tflops], got {list(row)!r}")
            m, n, k, tflops = row
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
                raise SpecError(f"{where}: point {list(row)!r} must hold numbers")
            rates[(int(m), int(n), int(k))] = float(tflops) * 1e12
        ms = tuple(sorted({s[0] for s in rates}))
        ns = tuple(sorted({s[1] for s in rates}))
        ks = tuple(sorted({s[2] for s in rates}))
        missing = [(m, n, k) for m in ms for n in ns for k in ks if (m, n, k) not in rates]
        if missing:
            raise SpecError(f"{where}: the points must cover a full m x n x k grid; missing {missing[0]} "
                            f"and {len(missing) - 1} more")
        return cls(ms, ns, ks, tuple(rates[(m, n, k)] for m in ms for n in ns for k in ks), source)

    def points(self) -> list[list[float]]:
        """The table as [m, n, k, tflops] rows (the machine-file form)."""
        return [[m, n, k, self._at(i, j, q) / 1e12]
                for i, m in enumerate(self.ms) for j, n in enumerate(self.ns) for q, k in enumerate(self.ks)]

    def _at(self, i: int, j: int, q: int) -> float:
        return self.flops_per_s[(i * len(self.ns) + j) * len(self.ks) + q]

    def rate_flops_per_s(self, m: float, n: float, k: float) -> float:
        """Trilinear interpolation of the rate in (log2 m, log2 n, log2 k), clamped to the grid."""
        (i0, i1, wm), (j0, j1, wn), (q0, q1, wk) = (_bracket(self.ms, m), _bracket(self.ns, n),
                                                     _bracket(self.ks, k))
        rate = 0.0
        for i, a in ((i0, 1 - wm), (i1, wm)):
            for j, b in ((j0, 1 - wn), (j1, wn)):
                for q, c in ((q0, 1 - wk), (q1, wk)):
                    weight = a * b * c
                    if weight:
                        rate += weight * self._at(i, j, q)
        return rate


def _bracket(axis: tuple[int, ...], x: float) -> tuple[int, int, float]:
    """Indices of the grid points around x and the weight of the upper one, in log2 space."""
    if x <= axis[0]:
        return 0, 0, 0.0
    if x >= axis[-1]:
        last = len(axis) - 1
        return last, last, 0.0
    hi = bisect.bisect_right(axis, x)
    lo = hi - 1
    w = (math.log2(x) - math.log2(axis[lo])) / (math.log2(axis[hi]) - math.log2(axis[lo]))
    return lo, hi, w
