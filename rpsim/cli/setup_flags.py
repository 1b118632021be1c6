"""Flags shared by every command that takes a model, a server and a training setup, and their parsing
into specs (the edge where display units become SI)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from rpsim.catalog import GPUS_GRAMMAR, load_model, load_server
from rpsim.costs import ModelCosts, Profile, load_profile, model_costs
from rpsim.errors import SpecError
from rpsim.specs import ModelSpec, ServerSpec, TrainingSpec
from rpsim.specs.gpu import PRECISIONS
from rpsim.specs.training import MODES, RECOMPUTE_POLICIES

DEFAULT_SEQ = 2048
DEFAULT_GLOBAL_BATCH = 64
DEFAULT_MB_SIZE = 4


@dataclass(frozen=True)
class Setup:
    model: ModelSpec
    server: ServerSpec
    training: TrainingSpec
    costs: ModelCosts
    profile: Profile | None


def add_setup_flags(p: argparse.ArgumentParser, need_server: bool = True) -> None:
    p.add_argument("--model", required=True, help="preset name (rpsim list models) or a config.json path")
    p.add_argument("--gpus", required=need_server, default=None, help=GPUS_GRAMMAR)
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
    p.add_argument("--profile", default=None, help="profile.json with measured per-layer times and links")


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
                        recompute=args.recompute)


def setup_from_args(args: argparse.Namespace) -> Setup:
    model = load_model(args.model)
    server = load_server(args.gpus)
    training = training_from_args(args)
    costs = model_costs(model, training, server.gpu)
    profile = load_profile(args.profile) if args.profile else None
    if profile:
        costs = profile.apply(costs)
    return Setup(model, server, training, costs, profile)
