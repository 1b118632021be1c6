"""Flags shared by every command that takes a model, a server and a training setup, and their parsing
into specs (the edge where display units become SI)."""
from __future__ import annotations

import argparse

from rpsim.catalog import GPUS_GRAMMAR, load_model
from rpsim.catalog.models import OVERRIDABLE, override_model
from rpsim.errors import SpecError
from rpsim.ir.weight_deps import GRAD_FENCES
from rpsim.partition.counts import GRAMMAR
from rpsim.passes import LEVELS
from rpsim.passes.lower import WEIGHT_POLICIES
from rpsim.planner import FIXED_PARTITIONERS, ROUNDPIPE_PARTITIONERS, PlanRequest, check_counts
from rpsim.scenario import Scenario, make_scenario
from rpsim.schedules import SCHEDULES, traits_of
from rpsim.schedules.roundpipe import G0_RULES
from rpsim.specs import TrainingSpec
from rpsim.specs.gpu import PRECISIONS
from rpsim.specs.training import LAYER_IMPLS, MODES, RECOMPUTE_POLICIES, divisors

DEFAULT_SEQ = 2048
DEFAULT_GLOBAL_BATCH = 64
DEFAULT_MB_SIZE = 4


def add_setup_flags(p: argparse.ArgumentParser, need_model: bool = True) -> None:
    p.add_argument("--model", required=need_model,
                   help="preset name (rpsim list models) or a Hugging Face config.json path"
                        + ("" if need_model else " (default: none)"))
    p.add_argument("--model-override", default=None,
                   help="reshape the model, FIELD=INT,...: e.g. n_layers=4,hidden=512; FIELD is one of "
                        f"{', '.join(OVERRIDABLE)} (the columns of rpsim list models; default: none)")
    p.add_argument("--gpus", required=need_model, default=None,
                   help=GPUS_GRAMMAR + ("" if need_model else " (default: none)"))
    p.add_argument("--seq", type=int, default=DEFAULT_SEQ, help="sequence length in tokens (default %(default)s)")
    p.add_argument("--global-batch", type=int, default=DEFAULT_GLOBAL_BATCH,
                   help="sequences per optimizer step (default %(default)s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--mb-size", type=int, default=None,
                       help=f"sequences per microbatch (default {DEFAULT_MB_SIZE}, or 1 where {DEFAULT_MB_SIZE} "
                            "does not divide --global-batch)")
    group.add_argument("--n-mb", type=int, default=None,
                       help="microbatches per optimizer step; sets the microbatch size to --global-batch / "
                            "--n-mb (default: from --mb-size)")
    p.add_argument("--precision", default="bf16", choices=PRECISIONS,
                   help="compute precision: bf16/fp16 with fp32 accumulation, fp16-acc16 (fp16 accumulation, "
                        "the 4090's double-rate mode), fp32 (default %(default)s)")
    p.add_argument("--mode", default="full", choices=MODES,
                   help="full fine-tuning or LoRA adapters on a frozen base (default %(default)s)")
    p.add_argument("--lora-rank", type=int, default=32,
                   help="LoRA adapter rank r, in dimensions; used with --mode lora (default %(default)s)")
    p.add_argument("--recompute", default="stage", choices=RECOMPUTE_POLICIES,
                   help="activation recomputation: none (keep every activation), stage (keep each stage's "
                        "input, recompute its forward before backward), layer (keep each layer's input) "
                        "(default %(default)s)")
    p.add_argument("--loss-chunk-tokens", type=int, default=0,
                   help="compute the LM-head loss this many tokens at a time, never holding the full "
                        "logits (default %(default)s = full logits)")
    p.add_argument("--layer-impl", default="rpexec", choices=LAYER_IMPLS,
                   help="the code that runs the layers, which sets the activations they keep: rpexec's "
                        "decoder (default %(default)s), Hugging Face layers with FlashAttention-2 (the RoundPipe "
                        "paper's runs; with --loss-chunk-tokens, the roundpipe library's chunked loss), or the "
                        "paper's formula")
    p.add_argument("--profile", default=None,
                   help="profile.json with measured per-layer times in seconds and link rates "
                        "(from rpexec profile; default: none, the roofline cost model)")
    p.add_argument("--gpu-memory-gib", type=float, default=None,
                   help="GPU memory capacity in GiB, e.g. 24 to model an H200 capped like an RTX 4090 "
                        "(default: the GPU preset's)")


def check_count_flags(args: argparse.Namespace) -> None:
    """Counts must be positive (--loss-chunk-tokens may be 0); checked here, before TrainingSpec, so that
    the message names --seq rather than the spec's field seq_len."""
    for flag, value, least in (("--seq", args.seq, 1), ("--global-batch", args.global_batch, 1),
                               ("--mb-size", args.mb_size, 1), ("--n-mb", args.n_mb, 1),
                               ("--lora-rank", args.lora_rank, 1), ("--loss-chunk-tokens", args.loss_chunk_tokens, 0)):
        if value is not None and value < least:
            raise SpecError(f"{flag} {value}: must be an integer >= {least}")
    if args.mb_size is not None and args.global_batch % args.mb_size:
        raise SpecError(f"--mb-size {args.mb_size} does not divide --global-batch {args.global_batch}; "
                        f"valid mb sizes: {', '.join(map(str, divisors(args.global_batch)))}")


def training_from_args(args: argparse.Namespace) -> TrainingSpec:
    check_count_flags(args)
    mb_size = args.mb_size if args.mb_size is not None else DEFAULT_MB_SIZE
    if args.n_mb is not None:
        if args.n_mb < 1 or args.global_batch % args.n_mb:
            raise SpecError(f"--n-mb {args.n_mb} does not divide --global-batch {args.global_batch}")
        mb_size = args.global_batch // args.n_mb
    elif args.mb_size is None and args.global_batch % mb_size:
        mb_size = 1
    return TrainingSpec(seq_len=args.seq, global_batch=args.global_batch, mb_size=mb_size,
                        precision=args.precision, mode=args.mode, lora_rank=args.lora_rank,
                        recompute=args.recompute, loss_chunk_tokens=args.loss_chunk_tokens,
                        layer_impl=args.layer_impl)


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
                   help="ideal: compute only; hop: + a fixed delay in seconds per cross-GPU dependency "
                        "(from --profile, else derived from the links); pcie: every transfer on the shared "
                        "links (default %(default)s)")
    p.add_argument("--partition", default=None, help=GRAMMAR + " (default: from --partitioner)")
    p.add_argument("--partitioner", default=None,
                   help=f"fixed placement: {', '.join(FIXED_PARTITIONERS)} (default uneven); RoundPipe: "
                        f"{', '.join(ROUNDPIPE_PARTITIONERS)} (default roundpipe-paper)")
    p.add_argument("--virtual-stages", type=int, default=None,
                   help="stages per GPU for interleaved / looped-bfs (default 2, or 1 when the model has fewer than "
                        "2 layers per GPU)")
    p.add_argument("--round-size", type=int, default=None,
                   help="RoundPipe microbatches per round (default: the number of GPUs)")
    p.add_argument("--g0-rule", default="paper", choices=G0_RULES,
                   help="RoundPipe: the next round starts at g0 + S (paper) or on the earliest-free GPU "
                        "(default %(default)s)")
    p.add_argument("--grad-fence", default="none", choices=GRAD_FENCES,
                   help="what a layer's gradient waits for before its next download: none (each download takes "
                        "its own host buffer; the backlog behind the host optimizer sits in host memory), offload "
                        "(the layer's previous CPU step: one host buffer per layer, the backlog stays on the GPU), "
                        "backward (the roundpipe library: a backward job waits for its layers' previous "
                        "gradient copy) (default %(default)s)")
    p.add_argument("--weights", default="auto", choices=WEIGHT_POLICIES,
                   help="fixed-placement baselines: keep weights resident on their GPU, stream them from "
                        "host memory, or decide by memory (default %(default)s)")
    p.add_argument("--defer-w", action="store_true", default=False,
                   help="RoundPipe: split each backward into I and W and run a job's W passes after its I passes, "
                        "before the GPU's next job (default: off)")
    p.add_argument("--iters", type=int, default=None,
                   help="iterations to simulate (default 1; async schedules: enough for a steady state, 3 "
                        "or more)")


def check_plan_flags(args: argparse.Namespace, schedules: list[str]) -> None:
    """Refuse counts below 1 and a --partitioner, --partition or --virtual-stages that none of the
    schedules takes, before any work: each used to be silently replaced or dropped. What a schedule
    takes is its builder's declared traits (rpsim.schedules.traits)."""
    check_counts(args.virtual_stages, args.iters, args.round_size)
    traits = {name: traits_of(name) for name in schedules}
    if args.partitioner is not None and not any(args.partitioner in t.partitioners for t in traits.values()):
        valid = "; ".join(f"{name}: {', '.join(t.partitioners)}" for name, t in traits.items())
        raise SpecError(f"--partitioner {args.partitioner!r} does not apply to {', '.join(schedules)}; "
                        f"valid choices: {valid}")
    if args.partition is not None and not any(_partition_applies(args.partition, t) for t in traits.values()):
        kind = "FWD|BWD (round-robin)" if "|" in args.partition else "fixed-placement"
        raise SpecError(f"--partition {args.partition!r} is a {kind} spec, which none of {', '.join(schedules)} "
                        f"takes; {GRAMMAR}")
    if args.virtual_stages is not None and not any(_takes_virtual_stages(t) for t in traits.values()):
        takers = [name for name, m in SCHEDULES.items() if _takes_virtual_stages(m.TRAITS)]
        raise SpecError(f"--virtual-stages applies only to {', '.join(takers)}, not to {', '.join(schedules)}")


def _takes_virtual_stages(traits) -> bool:
    return traits.virtual_stages.fixed is None


def _partition_applies(spec: str, traits) -> bool:
    """A fixed spec applies to fixed-placement schedules, a FWD|BWD spec to asymmetric (round-robin) ones."""
    return ("|" in spec) == traits.asymmetric_partition


def plan_request(args: argparse.Namespace, schedule: str) -> PlanRequest:
    """The flags as they apply to one schedule: compare passes one set of flags to several schedules, so
    a partitioner, partition or V that this schedule does not take is left to the others
    (check_plan_flags has made sure some schedule takes it)."""
    traits = traits_of(schedule)
    partition = args.partition if args.partition and _partition_applies(args.partition, traits) else None
    partitioner = args.partitioner if args.partitioner in traits.partitioners else None
    return PlanRequest(schedule=schedule, fidelity=args.fidelity, partition=partition, partitioner=partitioner,
                       virtual_stages=args.virtual_stages, round_size=args.round_size, g0_rule=args.g0_rule,
                       n_iters=args.iters, weights=args.weights, grad_fence=args.grad_fence,
                       defer_w=args.defer_w and traits.deferrable_w)
