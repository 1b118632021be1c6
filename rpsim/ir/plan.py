"""`Partition` (stage -> pipeline-layer ranges) and `Plan` (per-GPU ordered lanes of actions).

Pipeline layers are numbered 0 (embedding), 1..L (transformer layers), L+1 (head: final norm, LM head,
loss). A stage is a contiguous range [start, end) of them. Forward and backward partitions may differ
(RoundPipe); with `fused`, the last backward stage runs forward and backward together (FB) and the
forward partition stops where it starts.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rpsim.errors import PlanError
from rpsim.ir.action import Action

CPU = -1  # device index of the host: the CPU optimizer's lane lives there
# compute: the GPU stream running kernels; h2d / d2h: activation copies; param_h2d / grad_d2h: weight uploads
# and gradient downloads on their own copy streams (RoundPipe's transfer engine); p2p / p2p_recv: GPU-to-GPU
# sends and the matching receives; optimizer: the host CPU's optimizer thread (device CPU).
LANES = ("compute", "h2d", "d2h", "param_h2d", "grad_d2h", "p2p", "p2p_recv", "optimizer")
LaneId = tuple[int, str]
Range = tuple[int, int]


@dataclass(frozen=True)
class Partition:
    fwd: tuple[Range, ...]
    bwd: tuple[Range, ...]
    fused: bool = False

    def __post_init__(self) -> None:
        if not self.bwd:
            raise PlanError("partition: needs at least one backward stage")
        _check_cover("bwd", self.bwd, 0, self.bwd[-1][1])
        fwd_end = self.bwd[-1][0] if self.fused else self.bwd[-1][1]
        if self.fwd or fwd_end:
            _check_cover("fwd", self.fwd, 0, fwd_end)

    @property
    def n_layers(self) -> int:
        return self.bwd[-1][1]

    @property
    def symmetric(self) -> bool:
        return not self.fused and self.fwd == self.bwd

    @classmethod
    def same(cls, ranges: tuple[Range, ...]) -> Partition:
        return cls(fwd=tuple(ranges), bwd=tuple(ranges))

    def ranges(self, phase: str) -> tuple[Range, ...]:
        return self.fwd if phase == "F" else self.bwd

    def stage_of_layer(self, phase: str, layer: int) -> int:
        for s, (a, b) in enumerate(self.ranges(phase)):
            if a <= layer < b:
                return s
        raise PlanError(f"layer {layer} is in no {phase} stage")

    def to_json(self) -> dict[str, Any]:
        return {"fwd": [list(r) for r in self.fwd], "bwd": [list(r) for r in self.bwd], "fused": self.fused}


def _check_cover(name: str, ranges: tuple[Range, ...], start: int, end: int) -> None:
    pos = start
    for i, (a, b) in enumerate(ranges):
        if a != pos or b <= a:
            raise PlanError(f"partition.{name}[{i}] = [{a}, {b}) does not continue the cover at layer {pos} "
                            f"(stages must be non-empty, contiguous, in order)")
        pos = b
    if pos != end:
        raise PlanError(f"partition.{name} covers layers [{start}, {pos}), expected [{start}, {end})")


@dataclass(frozen=True)
class Plan:
    schedule: str
    n_gpus: int
    n_mb: int
    partition: Partition
    lanes: Mapping[LaneId, tuple[Action, ...]]
    n_iters: int = 1
    recompute: str = "stage"  # none | stage | layer
    optimizer: str = "sync"  # sync | async (CPU step overlaps the next iteration, staleness 1)
    level: str = "compute"  # compute (builder output) | ideal | hop | pcie (after lowering for that level)
    # Where weights live, decided once by lowering (rpsim.passes.lower): "resident" on their stage's GPU,
    # "streamed" from host memory to their stage's GPU per job, "stateless" (stages have no home GPU:
    # RoundPipe). "" on a builder's compute plan; rpsim.ir.jobs.residency derives it there.
    residency: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)  # builder options, e.g. virtual_stages
    setup: Mapping[str, Any] = field(default_factory=dict)  # model / training / server, for export
    # Edges no rule derives (e.g. RoundPipe's LPT issue windows): ((gpu, action), (gpu, action)) pairs.
    extra_edges: tuple[tuple[tuple[int, Action], tuple[int, Action]], ...] = ()

    def lane(self, gpu: int, name: str) -> tuple[Action, ...]:
        return self.lanes.get((gpu, name), ())

    def __getstate__(self) -> dict[str, Any]:
        # What rpsim.ir.deps and rpsim.ir.jobs cache on a plan is rebuilt on demand, not shipped to workers.
        return {k: v for k, v in self.__dict__.items() if k not in ("_dependency_graph", "_dependency_facts", "_jobs")}

    def items(self) -> Iterator[tuple[LaneId, int, Action]]:
        for lane_id in sorted(self.lanes):
            for i, a in enumerate(self.lanes[lane_id]):
                yield lane_id, i, a

    def compute_actions(self) -> Iterator[tuple[int, Action]]:
        for (gpu, lane), actions in sorted(self.lanes.items()):
            if lane == "compute":
                for a in actions:
                    if a.is_compute:
                        yield gpu, a

    def with_lanes(self, lanes: Mapping[LaneId, tuple[Action, ...]], level: str | None = None) -> Plan:
        from dataclasses import replace
        return replace(self, lanes=dict(sorted(lanes.items())), level=level or self.level)
