"""The search space: one `Candidate` per (schedule, microbatching, recompute, partitioner, virtual stages,
RoundPipe round size), enumerated in a fixed order, and how a candidate becomes a scenario variant and a
PlanRequest. Pure; imports no simulator."""
from __future__ import annotations

from dataclasses import dataclass, replace

from rpsim.planner import PlanRequest
from rpsim.scenario import Scenario
from rpsim.schedules import SCHEDULES, traits_of
from rpsim.search.sweep import sweep_names
from rpsim.specs import TrainingSpec
from rpsim.specs.training import RECOMPUTE_POLICIES, divisors

LOCAL = "local-search"  # rpsim.partition.local_search refined a seed partition
MAX_VIRTUAL_STAGES = 16
# RoundPipe's GPUs are stateless: only stage-boundary activations survive a stage, so without
# recomputation every activation would have to travel through host memory. The lowering passes do not
# move them, so recompute "none" would be a free lunch the simulator cannot honestly price: not offered.
ROUNDPIPE_RECOMPUTE = ("stage", "layer")


@dataclass(frozen=True)
class Candidate:
    schedule: str
    mb_size: int
    recompute: str
    # even | balanced | uneven | roundpipe-paper | roundpipe-library | sweep:F:B:X | local-search
    partitioner: str
    virtual_stages: int = 1
    round_size: int | None = None  # RoundPipe microbatches per round; None elsewhere
    partition: str | None = None  # explicit --partition spec once resolved (always, for local search)
    n_iters: int | None = None  # iterations the full simulator runs; None: the planner's default
    defer_w: bool = False  # RoundPipe: backward jobs split into I and W (BuildOptions.defer_w)

    @property
    def roundpipe(self) -> bool:
        """Stages dispatched over stateless GPUs, with an asymmetric FWD|BWD partition."""
        return traits_of(self.schedule).asymmetric_partition

    @property
    def sort_key(self) -> tuple:
        """A total order for deterministic tie-breaking; the optional fields are None for some plans,
        which dataclass ordering cannot compare with an int (a crash in search before this key)."""
        return (self.schedule, self.mb_size, self.recompute, self.partitioner, self.virtual_stages,
                self.round_size or 0, self.partition or "", self.n_iters or 0, self.defer_w)

    @property
    def config(self) -> tuple:
        """Everything but the partition: the seeds a partition local search refines."""
        return (self.schedule, self.mb_size, self.recompute, self.virtual_stages, self.round_size, self.defer_w)

    def label(self) -> str:
        parts = [self.schedule, f"mb{self.mb_size}", f"rc-{self.recompute}", self.partitioner]
        if self.virtual_stages > 1:
            parts.append(f"v{self.virtual_stages}")
        if self.round_size:
            parts.append(f"round{self.round_size}")
        if self.defer_w:
            parts.append("defer-w")
        return " ".join(parts)


def training_for(base: TrainingSpec, mb_size: int, recompute: str) -> TrainingSpec:
    return replace(base, mb_size=mb_size, recompute=recompute)


def plan_request(c: Candidate, fidelity: str = "pcie") -> PlanRequest:
    """The request make_plan builds this candidate from; an explicit partition makes it reproducible."""
    return PlanRequest(schedule=c.schedule, fidelity=fidelity, partition=c.partition,
                       partitioner=None if c.partition else c.partitioner,
                       virtual_stages=c.virtual_stages,
                       round_size=c.round_size, n_iters=c.n_iters, defer_w=c.defer_w)


def round_sizes(n_gpus: int, n_mb: int) -> list[int]:
    """RoundPipe needs M_R >= N microbatches per round (roundpipe.md); N, 2N, 4N, ... and all of them."""
    if n_mb <= n_gpus:
        return [n_mb]
    out, size = [], n_gpus
    while size < n_mb:
        out.append(size)
        size *= 2
    return [*out, n_mb]


def virtual_stage_counts(schedule: str, n_gpus: int, n_layers: int) -> list[int]:
    return traits_of(schedule).virtual_stages.choices(min(MAX_VIRTUAL_STAGES, n_layers // n_gpus))


def enumerate_candidates(sc: Scenario, schedules: tuple[str, ...] | None = None,
                         mb_sizes: tuple[int, ...] | None = None) -> list[Candidate]:
    """Every structured candidate, in a fixed order (schedule, mb size, recompute, partitioner, V, M_R)."""
    n, n_layers, gb = sc.server.n_gpus, sc.model.n_layers, sc.training.global_batch
    out = []
    for schedule in schedules or tuple(SCHEDULES):
        traits = traits_of(schedule)
        roundpipe = traits.asymmetric_partition
        for mb in mb_sizes or tuple(divisors(gb)):
            n_mb = gb // mb
            for rc in (ROUNDPIPE_RECOMPUTE if traits.stateless else RECOMPUTE_POLICIES):
                if roundpipe:
                    names = list(traits.partitioners)
                    if traits.partition_sweep and rc == "stage":  # the sweep where it pays
                        names += sweep_names(n_layers)
                    out += [Candidate(schedule, mb, rc, p, 1, r) for p in names for r in round_sizes(n, n_mb)]
                    if traits.deferrable_w:  # split backwards: the schedule's own partitioners, and local search
                        out += [Candidate(schedule, mb, rc, p, 1, r, defer_w=True) for p in traits.partitioners
                                for r in round_sizes(n, n_mb)]
                    continue
                counts, names = virtual_stage_counts(schedule, n, n_layers), traits.partitioners
                if traits.fast_estimate is None:
                    # Timed by the list timer (a lowered plan each, not an analytic estimate): the default
                    # partitioner and the lowest stage count only, so the fast stage stays fast.
                    counts, names = counts[:1], names[:1]
                for v in counts:
                    if n * v <= n_layers:
                        out += [Candidate(schedule, mb, rc, p, v) for p in names]
    return out
