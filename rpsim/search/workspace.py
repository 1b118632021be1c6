"""Per-process caches for one search: the scenario variants (one per microbatch size and recompute policy),
their fast-evaluator contexts, and resolved partitions. Each worker process builds its own from the base
scenario; nothing here is shared between processes."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from rpsim.costs import model_costs
from rpsim.errors import Infeasible, SpecError
from rpsim.ir import Partition
from rpsim.partition.counts import parse_partition_spec, partition_to_spec
from rpsim.planner import PlanRequest, choose_partition
from rpsim.scenario import Scenario
from rpsim.schedules import traits_of
from rpsim.search.fast_context import FastContext, context_of
from rpsim.search.fast_eval import Estimate, estimate, has_fast_estimate
from rpsim.search.space import Candidate, training_for
from rpsim.search.sweep import PREFIX as SWEEP
from rpsim.search.sweep import sweep_partition
from rpsim.specs import TrainingSpec

if TYPE_CHECKING:  # the simulator is imported only where a candidate is list-timed
    from rpsim.sim.list_timer import TransferTimes


def scenario_variant(base: Scenario, mb_size: int, recompute: str) -> Scenario:
    """The base scenario with another microbatch size and recompute policy."""
    return with_training(base, training_for(base.training, mb_size, recompute))


def with_training(base: Scenario, training: TrainingSpec) -> Scenario:
    """The base scenario under another training setup, built exactly as rpsim.scenario.make_scenario
    builds it (so an exported plan's setup rebuilds the same costs)."""
    if training == base.training:
        return base
    costs = model_costs(base.model, training, base.server.gpu)
    if base.profile:
        costs = base.profile.apply(costs)
    return replace(base, training=training, costs=costs)


class Workspace:
    def __init__(self, base: Scenario) -> None:
        self.base = base
        self._scenarios: dict[tuple[int, str], Scenario] = {}
        self._contexts: dict[tuple[int, str], FastContext] = {}
        self._partitions: dict[tuple, Partition | str] = {}
        self._transfers: TransferTimes | None = None  # built by the first list-timed estimate

    def scenario(self, mb_size: int, recompute: str) -> Scenario:
        key = (mb_size, recompute)
        if key not in self._scenarios:
            self._scenarios[key] = scenario_variant(self.base, mb_size, recompute)
        return self._scenarios[key]

    def context(self, mb_size: int, recompute: str) -> FastContext:
        key = (mb_size, recompute)
        if key not in self._contexts:
            self._contexts[key] = context_of(self.scenario(mb_size, recompute))
        return self._contexts[key]

    def partition(self, c: Candidate) -> Partition:
        """The candidate's partition; raises Infeasible (or SpecError) when its partitioner has none."""
        sc = self.scenario(c.mb_size, c.recompute)
        if c.partition:
            return parse_partition_spec(c.partition, sc.model.n_layers, c.roundpipe)
        # RoundPipe's partitioner ignores the recompute policy; the fixed ones weigh recompute time in.
        key = (c.partitioner, c.mb_size, sc.training.n_mb if c.roundpipe else c.recompute != "none",
               c.virtual_stages)
        if key not in self._partitions:
            req = PlanRequest(c.schedule, partitioner=c.partitioner, virtual_stages=c.virtual_stages)
            try:
                if c.partitioner.startswith(SWEEP):
                    self._partitions[key] = sweep_partition(sc, c.partitioner)
                else:
                    n_stages = sc.server.n_gpus * c.virtual_stages
                    self._partitions[key] = choose_partition(sc, req, c.roundpipe, n_stages,
                                                             traits_of(c.schedule).partitioners)
            except (Infeasible, SpecError) as e:
                self._partitions[key] = str(e)
        found = self._partitions[key]
        if isinstance(found, str):
            raise Infeasible(found)
        return found

    def transfers(self) -> TransferTimes:
        """One transfer-time memo for every list-timed candidate: scenario variants differ only in their
        training setup and costs, never in the server or profile the topology is built from."""
        if self._transfers is None:
            from rpsim.sim.list_timer import TransferTimes
            from rpsim.sim.topology import build_topology
            self._transfers = TransferTimes(build_topology(self.base.server, self.base.profile))
        return self._transfers

    def resolve(self, c: Candidate) -> Candidate:
        """The same candidate with its partition written out, so make_plan rebuilds exactly it."""
        return c if c.partition else replace(c, partition=partition_to_spec(self.partition(c)))

    def estimate(self, c: Candidate, part: Partition | None = None) -> Estimate:
        ctx = self.context(c.mb_size, c.recompute)
        part = part or self.partition(c)
        if not has_fast_estimate(c.schedule, c.defer_w):
            from rpsim.search.fast_list import estimate_by_list_timer  # imports the planner and simulator
            return estimate_by_list_timer(ctx, self.scenario(c.mb_size, c.recompute), c, part, self.transfers())
        return estimate(ctx, c.schedule, part, c.virtual_stages, c.round_size, c.defer_w)
