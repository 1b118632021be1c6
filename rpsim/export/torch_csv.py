"""torch.distributed.pipelining's compute-only CSV, both ways: write a fixed-placement plan's compute
order as the input of `_PipelineScheduleRuntime._load_csv`, and read any such CSV (torch's or written
by hand) back into per-GPU compute orders. Row r lists rank r's actions, e.g. `0F0,0F1,0I0,0W0`.
torch's kinds: F forward, B full backward, I backward-input, W backward-weight, and `(0F3;7B1)OVERLAP_F_B`
for an overlapped forward/backward pair (DualPipeV). Never imports torch."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from rpsim.errors import PlanError, SpecError
from rpsim.ir import Action, Plan

TORCH_KINDS = ("F", "B", "I", "W")  # torch 2.13 _ComputationType compute values our IR shares
OVERLAP = "OVERLAP_F_B"
_CELL = re.compile(r"^(?P<stage>\d+)(?P<kind>[FBIW])(?P<mb>\d+)$")


def to_torch_csv(plan: Plan) -> str:
    """One line per rank (GPU), comma-separated `<stage><kind><mb>`; raises PlanError if torch cannot run it."""
    _check_placement(plan)
    pairs = {(g, f): b for g, f, b in plan.options.get("overlapped", ())}  # (gpu, F text) -> B text
    lines = []
    for gpu in range(plan.n_gpus):
        cells, skip = [], ""
        for a in _one_iteration(plan, gpu):
            text = f"{a.stage}{a.kind}{a.mb}"
            if text == skip:
                skip = ""
                continue
            partner = pairs.get((gpu, text))
            if partner is not None:
                cells.append(f"({text};{partner}){OVERLAP}")
                skip = partner
            else:
                cells.append(text)
        lines.append(",".join(cells) + "\n")
    return "".join(lines)


@dataclass(frozen=True)
class TorchOrder:
    """A torch compute-only schedule: per rank, its compute actions in order (iteration 0)."""

    per_gpu: tuple[tuple[Action, ...], ...]
    overlapped: tuple[tuple[int, str, str], ...]  # (gpu, F action, B action) issued as one pair

    @property
    def n_stages(self) -> int:
        return 1 + max((a.stage for row in self.per_gpu for a in row), default=-1)  # type: ignore[type-var]

    @property
    def n_mb(self) -> int:
        return 1 + max((a.mb for row in self.per_gpu for a in row), default=-1)  # type: ignore[type-var]


def parse_torch_csv(text: str, source: str = "torch CSV") -> TorchOrder:
    """Read torch's compute-only CSV; blank cells (torch's idle steps) are skipped. Errors name the row
    and column."""
    rows, pairs = [], []
    for r, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        row: list[Action] = []
        for c, cell in enumerate(line.split(",")):
            cell = cell.strip()
            if not cell:
                continue
            where = f"{source}: row {r + 1}, column {c + 1}"
            if cell.startswith("("):
                inner, _, kind = cell[1:].partition(")")
                parts = [_compute(p.strip(), where) for p in inner.split(";")]
                if kind != OVERLAP or len(parts) != 2 or [a.kind for a in parts] != ["F", "B"]:
                    raise SpecError(f"{where}: {cell!r}: expected ({{stage}}F{{mb}};{{stage}}B{{mb}}){OVERLAP}")
                pairs.append((len(rows), str(parts[0]), str(parts[1])))
                row += parts
            else:
                row.append(_compute(cell, where))
        rows.append(tuple(row))
    if not rows:
        raise SpecError(f"{source}: no actions; expected one row of comma-separated actions per rank")
    return TorchOrder(tuple(rows), tuple(pairs))


def _compute(cell: str, where: str) -> Action:
    m = _CELL.match(cell)
    if not m:
        raise SpecError(f"{where}: {cell!r} is not a torch compute action; expected {{stage}}{{F|B|I|W}}{{mb}} "
                        f"such as 0F1, or (0F3;7B1){OVERLAP}")
    return Action(m["kind"], int(m["stage"]), int(m["mb"]))


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
