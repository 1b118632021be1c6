"""A scenario whose host optimizer STEP runs `factor` times as long alone: every host-STEP rate the
server and the profile carry is divided by it (the thread curve, the residency curve and the model's
own layer STEP too; rpsim.costs.cpu_optimizer). Shared resources keep their capacities, so beside other
traffic the STEP moves by up to that factor.

What it is for: telling a prediction's error apart into the host STEP's speed and the rest. On the lent
one-H200 host the same layer's STEP moved by ±20% within minutes while GPU work held to 1% (README, e03,
session 14), so `rpsim validate` reports the iteration the plan would have had at the STEP speed the run
measured (validate_run.validate), and experiments/e03_given_step.py does so for e03's runs."""
from __future__ import annotations

from dataclasses import replace

from rpsim.scenario import Scenario


def _slower(rate: float | None, factor: float) -> float | None:
    return rate / factor if rate else rate


def with_host_step_slower(sc: Scenario, factor: float) -> Scenario:
    """`sc` with every host-STEP rate divided by `factor` (> 0)."""
    if not factor > 0:
        raise ValueError(f"factor {factor!r}: must be > 0")
    h = sc.server.host
    host = replace(
        h, adam_params_per_s=h.adam_params_per_s / factor,
        grad_accumulate_params_per_s=_slower(h.grad_accumulate_params_per_s, factor),
        grad_widen_params_per_s=_slower(h.grad_widen_params_per_s, factor),
        grad_accumulate_resident_params_per_s=_slower(h.grad_accumulate_resident_params_per_s, factor),
        resident_rate_by_cache_share=tuple((share, rate / factor) for share, rate in h.resident_rate_by_cache_share),
        optimizer_rates_by_threads=tuple(
            replace(m, adam_params_per_s=m.adam_params_per_s / factor,
                    grad_accumulate_params_per_s=m.grad_accumulate_params_per_s / factor,
                    grad_accumulate_resident_params_per_s=_slower(m.grad_accumulate_resident_params_per_s, factor),
                    grad_widen_params_per_s=_slower(m.grad_widen_params_per_s, factor))
            for m in h.optimizer_rates_by_threads))
    profile = sc.profile
    if profile is not None:
        profile = replace(
            profile, adam_params_per_s=_slower(profile.adam_params_per_s, factor),
            grad_accumulate_params_per_s=_slower(profile.grad_accumulate_params_per_s, factor),
            grad_widen_params_per_s=_slower(profile.grad_widen_params_per_s, factor),
            layer_steps=tuple(replace(s, adam_refresh_s=s.adam_refresh_s * factor, widen_s=s.widen_s * factor,
                                      later_pass_s=s.later_pass_s * factor) for s in profile.layer_steps))
    return replace(sc, server=replace(sc.server, host=host), profile=profile)
