"""RoundPipe-sync: RoundPipe's dispatch with a synchronous optimizer step (a flush every iteration)."""
from __future__ import annotations

from rpsim.ir import Partition, Plan
from rpsim.schedules import roundpipe
from rpsim.schedules.base import ROUNDPIPE_PARTITIONERS, BuildOptions

NAME = "roundpipe-sync"
DESCRIPTION = "RoundPipe with a synchronous optimizer step: each iteration flushes"
FIXED_PLACEMENT = False
PARTITIONERS = ROUNDPIPE_PARTITIONERS  # the first is the default
VIRTUAL_STAGES = False  # takes --virtual-stages (stages per GPU)


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    return roundpipe.build_plan(NAME, "sync", n_gpus, partition, n_mb, options)
