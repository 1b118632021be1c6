"""RoundPipe-sync: RoundPipe's dispatch with a synchronous optimizer step (a flush every iteration)."""
from __future__ import annotations

from dataclasses import replace

from rpsim.ir import Partition, Plan
from rpsim.schedules import roundpipe
from rpsim.schedules.base import BuildOptions

NAME = "roundpipe-sync"
DESCRIPTION = "RoundPipe with a synchronous optimizer step: each iteration flushes"
TRAITS = replace(roundpipe.TRAITS, optimizer="sync", partition_sweep=False, search_reference=False,
                 steady_period=None, plan_steady_period=None)  # deferrable_w as roundpipe's


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    return roundpipe.build_plan(NAME, "sync", n_gpus, partition, n_mb, options)
