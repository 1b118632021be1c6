"""Write a fixed-placement plan's compute order as torch.distributed.pipelining's compute-only CSV, the
input of `_PipelineScheduleRuntime._load_csv`: row r lists rank r's actions, e.g. `0F0,0F1,0B0`.
torch's kinds: F forward, B full backward, I backward-input, W backward-weight. Never imports torch."""
from __future__ import annotations

from dataclasses import replace

from rpsim.errors import PlanError
from rpsim.ir import Action, Plan

TORCH_KINDS = ("F", "B", "I", "W")  # torch 2.13 _ComputationType compute values our IR shares


def to_torch_csv(plan: Plan) -> str:
    """One line per rank (GPU), comma-separated `<stage><kind><mb>`; raises PlanError if torch cannot run it."""
    _check_placement(plan)
    rows = [_one_iteration(plan, gpu) for gpu in range(plan.n_gpus)]
    return "".join(",".join(f"{a.stage}{a.kind}{a.mb}" for a in row) + "\n" for row in rows)


def _check_placement(plan: Plan) -> None:
    gpus_of: dict[tuple[bool, int], set[int]] = {}  # (is backward, stage) -> GPUs; sorts forward first
    for gpu, a in plan.compute_actions():
        if a.kind not in TORCH_KINDS:
            raise PlanError(f"torch pipelining has no {a.kind!r} action (GPU {gpu} runs {a}); "
                            f"exportable kinds: {', '.join(TORCH_KINDS)}")
        assert a.stage is not None  # Action guarantees it for compute kinds
        gpus_of.setdefault((a.partition_phase == "B", a.stage), set()).add(gpu)
    for (backward, stage), gpus in sorted(gpus_of.items()):
        if len(gpus) > 1:
            raise PlanError(f"torch binds each stage to one rank; this plan runs {'backward' if backward else 'forward'}"
                            f" stage {stage} on GPUs {sorted(gpus)} (schedule {plan.schedule!r} is not "
                            f"fixed-placement)")
    p = plan.partition
    if not p.symmetric:
        raise PlanError(f"torch runs a stage's forward and backward over the same layers; this plan's "
                        f"partitions differ (fwd={list(p.fwd)}, bwd={list(p.bwd)}, fused={p.fused})")
    for (backward, stage), gpus in sorted(gpus_of.items()):
        other = gpus_of.get((not backward, stage), gpus)
        if other != gpus:
            raise PlanError(f"torch binds each stage to one rank; this plan runs stage {stage}'s forward and "
                            f"backward on different GPUs ({sorted(gpus | other)})")


def _one_iteration(plan: Plan, gpu: int) -> list[Action]:
    """torch's CSV is one flushed step; a multi-iteration plan must repeat iteration 0 back to back."""
    actions = [a for a in plan.lane(gpu, "compute") if a.is_compute]
    first = [a for a in actions if a.it == 0]
    if actions != [replace(a, it=it) for it in range(plan.n_iters) for a in first]:
        raise PlanError(f"torch's CSV holds one flushed iteration; GPU {gpu}'s {plan.n_iters} iterations are not "
                        f"iteration 0's order repeated back to back, so the plan has no single step to export")
    return first
