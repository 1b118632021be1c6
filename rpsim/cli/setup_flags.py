"""Flags shared by every command that takes a model, a server and a training setup, and their parsing
into specs (the edge where display units become SI)."""
from __future__ import annotations

import argparse

from rpsim.catalog import GPUS_GRAMMAR, load_model
from rpsim.catalog.models import override_model
from rpsim.errors import SpecError
from rpsim.partition.counts import GRAMMAR
from rpsim.passes import LEVELS
from rpsim.passes.lower import WEIGHT_POLICIES
from rpsim.planner import FIXED_PARTITIONERS, ROUNDPIPE_PARTITIONERS, PlanRequest
from rpsim.scenario import Scenario, make_scenario
from rpsim.schedules import traits_of
from rpsim.schedules.roundpipe import G0_RULES
from rpsim.specs import TrainingSpec
from rpsim.specs.gpu import PRECISIONS
from rpsim.specs.training import MODES, RECOMPUTE_POLICIES

DEFAULT_SEQ = 2048
DEFAULT_GLOBAL_BATCH = 64
DEFAULT_MB_SIZE = 4


def add_setup_flags(p: argparse.ArgumentParser, need_model: bool = True) -> None:
    p.add_argument("--model", required=need_model, help="preset name (rpsim list models) or a config.json path")
    p.add_argument("--model-override", default=None,
                   help="shrink or reshape the model, e.g. n_layers=4,hidden=512 (fields of rpsim list models)")
    p.add_argument("--gpus", required=need_model, default=None, help=GPUS_GRAMMAR)
    p.add_argument("--seq", type=int, default=DEFAULT_SEQ, help="sequence length (default %(default)s)")
    p.add_argument("--global-batch", type=int, default=DEFAULT_GLOBAL_BATCH,
                   help="sequences per optimizer step (default %(default)s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--mb-size", type=int, default=None, help=f"sequences per microbatch (default {DEFAULT_MB_SIZE})")
    group.add_argument("--n-mb", type=int, default=None, help="microbatches per step (sets mb size)")
    p.add_argument("--precision", default="bf16", choices=PRECISIONS)
    p.add_argument("--mode", default="full", choices=MODES, help="full fine-tuning or LoRA")
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--recompute", default="stage", choices=RECOMPUTE_POLICIES)
    p.add_argument("--loss-chunk-tokens", type=int, default=0,
                   help="compute the LM-head loss this many tokens at a time, never holding the full "
                        "logits (0 = full logits, the default)")
    p.add_argument("--profile", default=None, help="profile.json with measured per-layer times and links")
    p.add_argument("--gpu-memory-gib", type=float, default=None,
                   help="override the GPU memory capacity (e.g. 24 to model an H200 capped like an RTX 4090)")


def training_from_args(args: argparse.Namespace) -> TrainingSpec:
    mb_size = args.mb_size if args.mb_size is not None else DEFAULT_MB_SIZE
    if args.n_mb is not None:
        if args.n_mb < 1 or args.global_batch % args.n_mb:
            raise SpecError(f"--n-mb {args.n_mb} does not divide --global-batch {args.global_batch}")
        mb_size = args.global_batch // args.n_mb
    elif args.mb_size is None and args.global_batch % mb_size:
        mb_size = 1
    return TrainingSpec(seq_len=args.seq, global_batch=args.global_batch, mb_size=mb_size,
                        precision=args.precision, mode=args.mode, lora_rank=args.lora_rank,
                        recompute=args.recompute, loss_chunk_tokens=args.loss_chunk_tokens)


def setup_from_args(args: argparse.Namespace) -> Scenario:
    if args.gpu_memory_gib is not None and args.gpu_memory_gib <= 0:
        raise SpecError(f"--gpu-memory-gib must be > 0, got {args.gpu_memory_gib}")
    memory = args.gpu_memory_gib * 2**30 if args.gpu_memory_gib else None
    model = load_model(args.model)
    if args.model_override:
        model = override_model(model, args.model_override)
    return make_scenario(model, args.gpus, training_from_args(args), args.profile, memory)


def add_plan_flags(p: argparse.ArgumentParser) -> None:
    """How a schedule becomes a plan: fidelity, partition, virtual stages, RoundPipe options."""
    p.add_argument("--fidelity", default="pcie", choices=LEVELS,
                   help="ideal: compute only; hop: + fixed delay per cross-GPU dependency; pcie: full (default)")
    p.add_argument("--partition", default=None, help=GRAMMAR)
    p.add_argument("--partitioner", default=None,
                   help=f"fixed placement: {', '.join(FIXED_PARTITIONERS)} (default uneven); RoundPipe: "
                        f"{', '.join(ROUNDPIPE_PARTITIONERS)} (default roundpipe-paper)")
    p.add_argument("--virtual-stages", type=int, default=None, help="stages per GPU for interleaved / looped-bfs")
    p.add_argument("--round-size", type=int, default=None, help="RoundPipe microbatches per round (default: GPUs)")
    p.add_argument("--g0-rule", default="paper", choices=G0_RULES,
                   help="RoundPipe: next round starts at g0 + S (paper) or on the earliest-free GPU")
    p.add_argument("--weights", default="auto", choices=WEIGHT_POLICIES,
                   help="fixed-placement baselines: keep weights on their GPU, stream them, or decide by memory")
    p.add_argument("--defer-w", action="store_true",
                   help="RoundPipe: split each backward into I and W and run a job's W passes after its I passes, "
                        "before the GPU's next job")
    p.add_argument("--iters", type=int, default=None, help="iterations to simulate (default 1; async 3)")


def plan_request(args: argparse.Namespace, schedule: str) -> PlanRequest:
    traits = traits_of(schedule)
    partition = args.partition
    if partition is not None and ("|" in partition) != traits.asymmetric_partition:
        partition = None  # a fixed spec applies to fixed schedules, a FWD|BWD spec to RoundPipe ones
    partitioner = args.partitioner
    if partitioner in (*FIXED_PARTITIONERS, *ROUNDPIPE_PARTITIONERS) and partitioner not in traits.partitioners:
        partitioner = None  # another family's partitioner: this schedule uses its own default
    return PlanRequest(schedule=schedule, fidelity=args.fidelity, partition=partition, partitioner=partitioner,
                       virtual_stages=args.virtual_stages, round_size=args.round_size, g0_rule=args.g0_rule,
                       n_iters=args.iters, weights=args.weights,
                       defer_w=args.defer_w and traits.deferrable_w)
