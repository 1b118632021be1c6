"""The one schedule IR: actions, lanes, partitions and plans. Builders emit it, passes rewrite it, the
simulator times it, rpexec runs it, plots draw it. Pure data; no timing lives here."""
from rpsim.ir.action import COMPUTE_KINDS, KINDS, TRANSFER_KINDS, Action, parse_action
from rpsim.ir.plan import CPU, LANES, LaneId, Partition, Plan

__all__ = [
           "COMPUTE_KINDS",
           "CPU",
           "KINDS",
           "LANES",
           "TRANSFER_KINDS",
           "Action",
           "LaneId",
           "Partition",
           "Plan",
           "parse_action",
]
