"""Activation moves. Stateless-GPU plans (RoundPipe) keep every stage-boundary activation in host memory:
each producer downloads its output (ACT_OUT) and each consumer uploads its inputs (ACT_IN). Fixed
placements move only what crosses GPUs: by P2P (SEND / RECV) when the server has it, else through
pinned host memory (no P2P on RTX 4090s with the stock driver). Receives get their own lane so a
posted receive never holds up a send (NCCL's batched isend/irecv, as Megatron issues them)."""
from __future__ import annotations

from collections import defaultdict
from operator import itemgetter

from rpsim.ir import Action, LaneId, Plan
from rpsim.ir.dataflow import EITHER_BACKWARD, inputs_of, uses_split_backward
from rpsim.ir.jobs import stages_are_resident

Lanes = dict[LaneId, tuple[Action, ...]]


def add_activation_transfers(plan: Plan, lanes: Lanes, use_p2p: bool) -> Lanes:
    stateless = not stages_are_resident(plan)
    compute = list(plan.compute_actions())
    split = uses_split_backward([a for _, a in compute])
    # Compute actions by their fields, not by Action: a producer named by inputs_of is a new object, and
    # each dict lookup with it ran the dataclass __eq__ in Python (200k calls on a 16-GPU plan).
    where = {_fields(a): g for g, a in compute}
    pos = {_fields(a): i for g in range(plan.n_gpus) for i, a in enumerate(plan.lane(g, "compute"))}
    # inputs_of reads its consumer's microbatch and iteration: one answer per (kind, stage) serves all.
    producers: dict[tuple[str, int | None], list[tuple[str, int | None]]] = {}
    keyed: dict[LaneId, list[tuple[float, Action]]] = defaultdict(list)
    outs_done: set[tuple] = set()
    sends_done: set[tuple] = set()
    for gpu, x in compute:
        needs_upload = False
        if x.kind == "W":  # W reads what its I left on the GPU (rpsim.ir.validate: the same GPU)
            continue
        shape = (x.kind, x.stage)
        shape_producers = producers.get(shape)
        if shape_producers is None:
            shape_producers = producers[shape] = [(i.producer.kind, i.producer.stage)
                                                  for i in inputs_of(x, plan.partition, split)]
        mb, it = x.mb, x.it
        for kind, stage in shape_producers:
            p = (kind, stage, mb, it, None, None, None)
            if p not in where and kind in EITHER_BACKWARD:  # a plan may split some backwards only (DualPipeV)
                other = (EITHER_BACKWARD[kind], stage, mb, it, None, None, None)
                if other in where:
                    p, kind = other, other[0]
            src = where[p]
            if src == gpu and not stateless:
                continue
            phase = "F" if kind == "F" else "B"  # the producer's partition_phase
            if use_p2p:
                if (src, p, gpu) not in sends_done:
                    sends_done.add((src, p, gpu))
                    keyed[(src, "p2p")].append((pos[p] + 0.25, Action("SEND", stage, mb, it, phase, peer=gpu)))
                    keyed[(gpu, "p2p_recv")].append(
                        (pos[_fields(x)] - 0.25, Action("RECV", stage, mb, it, phase, peer=src)))
                continue
            needs_upload = True
            if p not in outs_done:
                outs_done.add(p)
                keyed[(src, "d2h")].append((pos[p], Action("ACT_OUT", stage, mb, it, phase)))
        if needs_upload:
            keyed[(gpu, "h2d")].append((pos[_fields(x)], Action("ACT_IN", x.stage, mb, it, x.partition_phase)))
    out = dict(lanes)
    for lane_id, items in keyed.items():
        out[lane_id] = tuple(a for _, a in _in_lane_order(items))
    return out


def _fields(a: Action) -> tuple:
    return (a.kind, a.stage, a.mb, a.it, a.phase, a.chunk, a.peer)


def _in_lane_order(items: list[tuple[float, Action]]) -> list[tuple[float, Action]]:
    """By position, ties broken by the action's text. The text is built only when positions tie (a
    receive lane's inputs of one consumer): str() of every action was a fifth of this pass."""
    items = sorted(items, key=itemgetter(0))
    if any(items[i][0] == items[i + 1][0] for i in range(len(items) - 1)):
        items.sort(key=lambda t: (t[0], str(t[1])))
    return items
