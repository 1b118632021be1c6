"""The two calibrated curves of the host optimizer's model (rpsim.costs.cpu_optimizer says what they
mean): the resident fraction of a tensor by the share of the cache it fills, and a rate's fraction of
its all-core value by thread count. Pure interpolation, no units."""
from __future__ import annotations


def interpolate(points: tuple[tuple[float, float], ...], x: float) -> float:
    """Piecewise-linear through `points` (sorted by x), held constant beyond the first and last."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def resident_fractions(points: tuple[tuple[float, float], ...], streamed_params_per_s: float,
                       resident_params_per_s: float) -> tuple[tuple[float, float], ...]:
    """(share, h) from (share, measured later-pass rate r_s): a pass of which h runs at the resident rate
    r_1 and 1 - h at the streamed r_0 takes 1/r_s = h/r_1 + (1 - h)/r_0, so h = (1/r_0 - 1/r_s) /
    (1/r_0 - 1/r_1), clamped to [0, 1]; none where the resident rate is no faster than a streamed one."""
    if not points or resident_params_per_s <= streamed_params_per_s:
        return ()
    span = 1 / streamed_params_per_s - 1 / resident_params_per_s
    return tuple((share, min(1.0, max(0.0, (1 / streamed_params_per_s - 1 / rate) / span)))
                 for share, rate in sorted(points))


def thread_ratio(points: tuple[tuple[float, float], ...], threads: int, all_threads: int) -> float:
    """A rate at `threads` as a fraction of its rate at `all_threads`, from (threads, fraction) measured at
    fewer: linear between the points and (all_threads, 1), in proportion to the count below the first
    (each thread does its share of the work)."""
    if not points or threads >= all_threads:
        return 1.0
    curve = (*sorted(points), (float(all_threads), 1.0))
    t0, r0 = curve[0]
    return r0 * threads / t0 if threads < t0 else interpolate(curve, threads)


def rate_at_threads(points: tuple[tuple[float, float], ...], threads: float) -> float:
    """A rate at `threads` from (threads, rate) measured at several counts: linear between them, held at
    the highest count's beyond it, and in proportion to the count below the lowest (as thread_ratio)."""
    curve = tuple(sorted(points))
    t0, r0 = curve[0]
    return r0 * threads / t0 if threads < t0 else interpolate(curve, threads)
