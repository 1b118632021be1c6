"""Does a trace belong to a plan? A trace of another model, schedule or GPU count used to be compared
(rpsim validate) or drawn with dependency arrows (rpsim plot --trace --plan) without a word. A trace
belongs to a plan when its metadata (where it has any) names the plan's schedule, GPU count and model,
and its events are exactly the plan's actions on the plan's lanes, repeated in whole blocks of the plan's
iterations (rpexec --iters runs the plan several times, shifting iteration numbers)."""
from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Any

from rpsim.errors import PlanError
from rpsim.ir import CPU, Plan
from rpsim.ir.action import parse_action
from rpsim.sim.trace import Trace


def _meta_mismatches(plan: Plan, meta: dict[str, Any]) -> list[str]:
    model = plan.setup.get("model", {})
    expected = {"schedule": plan.schedule, "n_gpus": plan.n_gpus,
                "model": model.get("name") if isinstance(model, dict) else None}
    return [f"{key} {meta[key]!r} (the plan's: {want!r})" for key, want in expected.items()
            if want is not None and key in meta and meta[key] != want]


def check_trace_matches_plan(plan: Plan, trace: Trace, trace_name: str, plan_name: str) -> None:
    problems = _meta_mismatches(plan, trace.meta)
    if problems:
        raise PlanError(f"trace {trace_name!r} does not belong to plan {plan_name!r}: it records "
                        f"{'; '.join(problems)}")
    position = {(g, lane, a): i for (g, lane), actions in plan.lanes.items() for i, a in enumerate(actions)}
    planned = set(position)
    seen = set()
    order: dict[tuple[int, str], list[tuple[float, int, int, int]]] = {}
    for i, e in enumerate(trace.events):
        if not (e.gpu == CPU or 0 <= e.gpu < plan.n_gpus):
            raise PlanError(f"trace {trace_name!r} $.events[{i}]: GPU {e.gpu} is outside plan {plan_name!r} "
                            f"(GPUs 0..{plan.n_gpus - 1}, and {CPU} for the host)")
        try:
            action = parse_action(e.action)
        except PlanError as err:
            raise PlanError(f"trace {trace_name!r} $.events[{i}].action: {err}") from None
        key = (e.gpu, e.lane, replace(action, it=action.it % plan.n_iters))
        if key not in planned:
            raise PlanError(f"trace {trace_name!r} $.events[{i}]: {e.action} on GPU {e.gpu} lane {e.lane!r} is "
                            f"not an action of plan {plan_name!r} ({plan.schedule}, {plan.n_gpus} GPUs, "
                            f"{plan.n_mb} microbatches)")
        seen.add(key)
        order.setdefault((e.gpu, e.lane), []).append((e.start_s, action.it // plan.n_iters, position[key], i))
    missing = planned - seen
    if missing:
        g, lane, a = min(missing, key=lambda k: (k[0], k[1], str(k[2])))
        raise PlanError(f"trace {trace_name!r} lacks {len(missing)} of the {len(planned)} actions of plan "
                        f"{plan_name!r}, e.g. {a} on GPU {g} lane {lane!r}: it is of another plan or of a "
                        "run that stopped early")
    _check_lane_order(order, trace_name, plan_name)


def _check_lane_order(order: dict[tuple[int, str], list[tuple[float, int, int, int]]], trace_name: str,
                      plan_name: str) -> None:
    """A lane is a stream: its actions start in the plan's order (block after block of iterations). Two
    plans of one model can hold the same actions in another order (GPipe and 1F1B do), so the set of
    actions alone does not tell them apart. Equal start times are taken in the plan's order."""
    for (gpu, lane), starts in order.items():
        ranked = sorted(starts)
        for before, after in pairwise(ranked):
            if (after[1], after[2]) < (before[1], before[2]):
                raise PlanError(f"trace {trace_name!r} $.events[{after[3]}]: on GPU {gpu} lane {lane!r} it starts "
                                f"after $.events[{before[3]}], which plan {plan_name!r} orders later on that lane; "
                                "the trace is of another plan")
