"""The host optimizer's measured curves in a topology file's [host] (written by `rpexec calibrate`):

    grad_accumulate_resident_by_cache_share = [[0.25, 1.1e10], [0.5, 1.0e10], [0.75, 8.0e9], [0.95, 7.0e9]]

    [[host.optimizer_threads]]
    threads = 11
    adam_params_per_s = 4.1e9
    grad_accumulate_params_per_s = 3.9e9
    grad_accumulate_resident_params_per_s = 7.0e9
    grad_widen_params_per_s = 8.0e9

The first: the later accumulation passes' rate over tensors whose fp32 gradient + scratch fill that share
of the last-level cache, at all cores. The second: the STEP's rates at fewer threads than cores. What
rpsim makes of both: rpsim.costs.cpu_optimizer."""
from __future__ import annotations

import math
from typing import Any

from rpsim.errors import SpecError
from rpsim.specs.server import OptimizerRatesAtThreads

RESIDENT_CURVE_KEY = "grad_accumulate_resident_by_cache_share"
THREADS_KEY = "optimizer_threads"
_THREAD_KEYS = {"threads", "adam_params_per_s", "grad_accumulate_params_per_s", "grad_accumulate_resident_params_per_s",
                "grad_widen_params_per_s"}


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def resident_rate_by_cache_share(where: str, value: Any) -> tuple[tuple[float, float], ...]:
    """[[share, params_per_s], ...]: shares in (0, 1], strictly increasing; rates > 0."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: {RESIDENT_CURVE_KEY} must be a list of [share, params_per_s] pairs, got {value!r}")
    points = []
    for pair in value:
        if (not isinstance(pair, list) or len(pair) != 2 or not _positive(pair[0]) or pair[0] > 1
                or not _positive(pair[1])):
            raise SpecError(f"{where}: {RESIDENT_CURVE_KEY} entry {pair!r}: must be [share in (0, 1], params_per_s > 0]")
        points.append((float(pair[0]), float(pair[1])))
    if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
        raise SpecError(f"{where}: {RESIDENT_CURVE_KEY}: shares must increase, got {[p[0] for p in points]}")
    return tuple(points)


def optimizer_rates_by_threads(where: str, value: Any, cores: int) -> tuple[OptimizerRatesAtThreads, ...]:
    """[[host.optimizer_threads]] entries: threads an integer in [1, cores), distinct; rates > 0."""
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise SpecError(f"{where}: {THREADS_KEY} must be an array of tables [[host.{THREADS_KEY}]], got {value!r}")
    out = []
    for i, entry in enumerate(value):
        here = f"{where} [[host.{THREADS_KEY}]] #{i}"
        unknown = sorted(set(entry) - _THREAD_KEYS)
        if unknown:
            raise SpecError(f"{here}: unknown key {unknown[0]!r}; valid choices: {', '.join(sorted(_THREAD_KEYS))}")
        threads = entry.get("threads")
        if not (isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads < cores):
            raise SpecError(f"{here}: threads = {threads!r}; must be an integer in 1..{cores - 1} (fewer than cores = {cores})")
        for key in ("adam_params_per_s", "grad_accumulate_params_per_s"):
            if not _positive(entry.get(key)):
                raise SpecError(f"{here}: {key} = {entry.get(key)!r}; must be a number > 0")
        for key in ("grad_accumulate_resident_params_per_s", "grad_widen_params_per_s"):
            if key in entry and not _positive(entry[key]):
                raise SpecError(f"{here}: {key} = {entry[key]!r}; must be a number > 0")
        optional = {k: float(entry[k]) for k in ("grad_accumulate_resident_params_per_s", "grad_widen_params_per_s")
                    if k in entry}
        out.append(OptimizerRatesAtThreads(threads, float(entry["adam_params_per_s"]),
                                           float(entry["grad_accumulate_params_per_s"]), **optional))
    if len({m.threads for m in out}) != len(out):
        raise SpecError(f"{where}: [[host.{THREADS_KEY}]] lists a thread count twice: {[m.threads for m in out]}")
    return tuple(sorted(out, key=lambda m: m.threads))
