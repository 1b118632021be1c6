"""Activation moves. Stateless-GPU plans (RoundPipe) keep every stage-boundary activation in host memory:
each producer downloads its output (ACT_OUT) and each consumer uploads its inputs (ACT_IN). Fixed
placements move only what crosses GPUs: by P2P (SEND / RECV) when the server has it, else through
pinned host memory (no P2P on RTX 4090s with the stock driver). Receives get their own lane so a
posted receive never holds up a send (NCCL's batched isend/irecv, as Megatron issues them)."""
from __future__ import annotations

from collections import defaultdict

from rpsim.ir import Action, LaneId, Plan
from rpsim.ir.dataflow import actual_producer, inputs_of, uses_split_backward
from rpsim.ir.jobs import stages_are_resident

Lanes = dict[LaneId, tuple[Action, ...]]


def add_activation_transfers(plan: Plan, lanes: Lanes, use_p2p: bool) -> Lanes:
    stateless = not stages_are_resident(plan)
    split = uses_split_backward([a for _, a in plan.compute_actions()])
    where = {a: g for g, a in plan.compute_actions()}
    pos = {a: i for g in range(plan.n_gpus) for i, a in enumerate(plan.lane(g, "compute"))}
    keyed: dict[LaneId, list[tuple[float, Action]]] = defaultdict(list)
    outs_done: set[Action] = set()
    sends_done: set[tuple[int, Action]] = set()
    for gpu, x in plan.compute_actions():
        needs_upload = False
        if x.kind == "W":  # W reads what its I left on the GPU (rpsim.ir.validate: the same GPU)
            continue
        for inp in inputs_of(x, plan.partition, split):
            p = actual_producer(inp.producer, where)
            src = where[p]
            if src == gpu and not stateless:
                continue
            if use_p2p:
                send = Action("SEND", p.stage, p.mb, p.it, p.partition_phase, peer=gpu)
                if (src, send) not in sends_done:
                    sends_done.add((src, send))
                    keyed[(src, "p2p")].append((pos[p] + 0.25, send))
                    keyed[(gpu, "p2p_recv")].append(
                        (pos[x] - 0.25, Action("RECV", p.stage, p.mb, p.it, p.partition_phase, peer=src)))
                continue
            needs_upload = True
            if p not in outs_done:
                outs_done.add(p)
                keyed[(src, "d2h")].append((pos[p], Action("ACT_OUT", p.stage, p.mb, p.it, p.partition_phase)))
        if needs_upload:
            keyed[(gpu, "h2d")].append((pos[x], Action("ACT_IN", x.stage, x.mb, x.it, x.partition_phase)))
    out = dict(lanes)
    for lane_id, items in keyed.items():
        out[lane_id] = tuple(a for _, a in sorted(items, key=lambda t: (t[0], str(t[1]))))
    return out
