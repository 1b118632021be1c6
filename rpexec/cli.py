"""`rpexec run plan.json`: replay a plan with torch; `--check-grads` compares one iteration's loss and
every gradient with a single-device reference. Exit 0 ok, 1 a check failed or the plan does not fit this
machine's memory, 2 bad input, 3 a run error, 130 interrupted."""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from rpexec.copy_order import COPY_ORDERS
from rpexec.errors import DTYPE_NAMES, ExecError, Interrupted
from rpsim.errors import Infeasible, PlanError, SpecError
from rpsim.report.outputs import check_output_flags

# torch and everything that imports it (rpexec.checks, .session, .profile, .reference) is imported inside
# the commands, so that building the parser and --help stay fast (tests/test_cli_help.py checks it).

EXIT_CODES = ("exit codes: 0 ok; 1 --check-grads found a difference, or the plan does not fit this machine's "
              "memory; 2 bad input (the message names the "
              "flag, the value and the valid choices); 3 the run failed (the message names the GPU, lane "
              "and action); 130 interrupted (Ctrl-C)")
DEBUG_HELP = "show a traceback for errors (default: off; accepted before or after the subcommand)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rpexec", description="Replay rpsim plans with torch.", epilog=EXIT_CODES)
    p.add_argument("--debug", action="store_true", default=False, help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a plan", epilog=EXIT_CODES)
    r.add_argument("plan", help="plan.json from rpsim export or rpsim search")
    r.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu (one thread per lane, for tests) or cuda (one GPU per plan GPU) (default %(default)s)")
    r.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="compute precision (default: fp32 on cpu, the plan's precision on cuda)")
    r.add_argument("--iters", type=int, default=None,
                   help="iterations to run, a multiple of the plan's (default: the plan's iterations)")
    r.add_argument("--check-grads", action="store_true", default=False,
                   help="compare iteration 0's loss and every gradient with a single-device reference; "
                        "exit 1 on a difference (default: off)")
    r.add_argument("--trace", default=None,
                   help="write the measured trace, rpsim.trace JSON with times in seconds (default: none)")
    r.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and the random token batches (default %(default)s)")
    r.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default %(default)s)")
    r.add_argument("--watchdog-s", type=float, default=300.0,
                   help="seconds an action may wait on its dependencies before the run fails naming it "
                        "(default %(default)s)")
    r.add_argument("--optimizer-threads", default="auto", metavar="auto|all|N",
                   help="threads of the host optimizer's STEP (torch intra-op): auto = with the asynchronous "
                        "optimizer on a GPU, this machine's cores less one per other lane thread of the plan, so "
                        "that lanes busy issuing or waiting do not stall its parallel regions, else torch's own "
                        "(rpexec/step_threads.py); all = torch's own, one per core; or N (default %(default)s)")
    r.add_argument("--copy-order", default="activations-first", choices=COPY_ORDERS,
                   help="activations-first: a backward's ACT_OUT is issued before its gradient OFFLOADs, since a "
                        "copy engine serves one direction in issue order, not by stream priority "
                        "(rpexec/copy_order.py); as-issued: each lane issues when it gets there "
                        "(default %(default)s)")
    r.add_argument("--inject-fault", default=None,
                   help="testing aid: GPU:LANE:ACTION:raise|hang|oom makes that action fail (default: none)")
    r.add_argument("--force", action="store_true", default=False,
                   help="run even when rpsim predicts more host or GPU memory than this machine has (default: off)")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    r.set_defaults(func=run, output_flags={"trace": "--trace"})
    pr = sub.add_parser("profile", help="measure this machine into a profile.json for rpsim --profile",
                        epilog=EXIT_CODES)
    pr.add_argument("--model", required=True, help="preset name (rpsim list models) or Hugging Face config.json")
    pr.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="device to time the layers on (default %(default)s)")
    pr.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                    help="compute precision (default: fp32 on cpu, bf16 on cuda)")
    pr.add_argument("--seq", type=int, default=2048,
                    help="sequence length in tokens of the timed microbatch (default %(default)s)")
    pr.add_argument("--mb-size", type=int, default=1,
                    help="sequences per timed microbatch (default %(default)s)")
    pr.add_argument("--reps", type=int, default=5,
                    help="timed repetitions per layer, after a warm-up; the median is kept (default %(default)s)")
    pr.add_argument("--host-step-only", action="store_true", default=False,
                    help="time only the host optimizer STEP (the model's own layer, at several thread counts), for "
                         "rpsim beside a calibrated machine file, which prices the GPU work (default: off)")
    pr.add_argument("-o", "--output", required=True, help="profile.json to write")
    pr.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    pr.set_defaults(func=profile, output_flags={"output": "-o/--output"})
    c = sub.add_parser("calibrate", help="measure this machine into a machine file that rpsim --gpus takes",
                       epilog=EXIT_CODES)
    c.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="what to measure (default: cpu)")
    c.add_argument("--gpus", type=int, default=None,
                   help="GPUs to measure (default: every visible GPU on cuda; 1 on cpu)")
    c.add_argument("--gpu", default=None,
                   help="GPU preset for what is not measured (peak rates, memory, PCIe generation); default: "
                        "from the CUDA device name; required on cpu (rpsim list gpus)")
    c.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="compute precision of the GEMM and attention timings (default: fp32 on cpu, bf16 on cuda)")
    c.add_argument("--reps", type=int, default=3, help="timed repetitions per figure (median; default 3)")
    c.add_argument("--dram-test-mib", type=int, default=1024,
                   help="size of each host buffer of the DRAM copy test, MiB (default 1024)")
    c.add_argument("--raw", default=None, help="also write every raw figure as JSON here (default: none)")
    c.add_argument("--only", default=None, choices=["strided-elementwise"],
                   help="measure only this (seconds) and fold it into the machine file --update names "
                        "(default: measure everything)")
    c.add_argument("--update", default=None, metavar="MACHINE.toml",
                   help="with --only: the machine file to fold the figure into; -o receives the result "
                        "(it may be the same path) (default: none)")
    c.add_argument("-o", "--output", required=True, help="the machine file to write (.toml)")
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    c.set_defaults(func=calibrate, output_flags={"output": "-o/--output", "raw": "--raw"})
    return p


def calibrate(args: argparse.Namespace) -> int:
    import torch

    from rpexec.calibrate import CalibrationSettings, measure
    from rpexec.machine_file import machine_table
    from rpsim.catalog.gpus import resolve_gpu_name
    from rpsim.catalog.servers import generic_server_table, server_from_table
    from rpsim.report.files import write_json_atomic, write_text_atomic
    from rpsim.report.toml_text import toml_text
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available; valid choices here: cpu")
    visible = torch.cuda.device_count() if args.device == "cuda" else 1
    n_gpus = visible if args.gpus is None else args.gpus
    if not 1 <= n_gpus <= visible:
        raise SpecError(f"--gpus {n_gpus}: this machine has {visible} {args.device} device(s); valid: 1..{visible}")
    if args.reps < 1 or args.dram_test_mib < 1:
        raise SpecError(f"--reps {args.reps} / --dram-test-mib {args.dram_test_mib}: both must be at least 1")
    if (args.only is None) != (args.update is None):
        raise SpecError("--only and --update go together: --only strided-elementwise --update MACHINE.toml "
                        f"(got --only {args.only}, --update {args.update})")
    if args.only:
        return _calibrate_only(args)
    if args.gpu is None and args.device == "cpu":
        raise SpecError("--gpu is required with --device cpu: the GPU preset whose unmeasured figures to keep "
                        "(rpsim list gpus)")
    gpu = resolve_gpu_name(args.gpu or _preset_of(torch.cuda.get_device_name(0)))
    dtype = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    settings = CalibrationSettings(args.device, n_gpus, dtype, gpu, args.reps, args.dram_test_mib << 20)
    raw = measure(settings, lambda step: print(f"rpexec calibrate: {step} ...", file=sys.stderr, flush=True))
    table = machine_table(raw, generic_server_table(gpu, n_gpus))
    server_from_table(args.output, table, where=args.output)  # what rpsim will load must load
    write_text_atomic(args.output, toml_text(table))
    if args.raw:
        write_json_atomic(args.raw, raw)
    opt, loaded = raw["optimizer"]["alone"], raw["optimizer"]["under_load"]
    best = max(row[3] for row in raw["gemm"])
    strided = raw["strided_elementwise"]
    print(f"rpexec: wrote {args.output}: GEMM up to {best:.1f} TFLOP/s over {len(raw['gemm'])} shapes, "
          f"strided elementwise kernels {strided['forward_gb_per_s']:.0f} / {strided['backward_gb_per_s']:.0f} "
          f"GB/s forward / backward, "
          f"host DRAM {raw['dram_gb_per_s']:.1f} GB/s, CPU optimizer Adam {opt['adam_params_per_s'] / 1e9:.2f} "
          f"G params/s alone; its step with one staged gradient took {opt['step_1_staged_s'] * 1e3:.1f} ms alone, "
          f"{loaded['step_1_staged_s'] * 1e3:.1f} ms under load")
    return 0


def _calibrate_only(args: argparse.Namespace) -> int:
    """`--only strided-elementwise --update FILE`: the strided elementwise probe alone, at the precision
    FILE was calibrated in, folded into FILE's table and written to -o."""
    import platform
    import tomllib
    from datetime import UTC, datetime
    from pathlib import Path

    import torch

    from rpexec.machine_file import with_strided_elementwise
    from rpexec.session import DTYPES
    from rpexec.strided_probe import strided_elementwise_rates
    from rpsim.catalog.servers import server_from_table
    from rpsim.report.files import write_json_atomic, write_text_atomic
    from rpsim.report.toml_text import toml_text
    try:
        table = tomllib.loads(Path(args.update).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"--update {args.update!r}: not a readable machine file ({e})") from None
    server_from_table(args.update, table, where=args.update)  # what it folds into must load
    precision = table.get("gpu_calibration", {}).get("precision")
    dtype = args.dtype or precision or ("fp32" if args.device == "cpu" else "bf16")
    if precision is not None and dtype != precision:
        raise SpecError(f"--dtype {dtype}: {args.update} was calibrated in {precision}; valid: {precision}")
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    print("rpexec calibrate: strided elementwise kernels (RoPE, GQA repeat, layout copies) ...",
          file=sys.stderr, flush=True)
    probe = strided_elementwise_rates(device, DTYPES[dtype], args.reps)
    conditions = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
                  "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                  else platform.processor() or platform.machine())}
    table = with_strided_elementwise(table, probe, conditions)
    server_from_table(args.output, table, where=args.output)
    write_text_atomic(args.output, toml_text(table))
    if args.raw:
        write_json_atomic(args.raw, {"strided_elementwise": probe, "conditions": conditions})
    print(f"rpexec: wrote {args.output}: strided elementwise kernels at {probe['forward_gb_per_s']:.0f} GB/s "
          f"forward, {probe['backward_gb_per_s']:.0f} GB/s backward (in the bytes rpsim counts for them)")
    return 0


def _preset_of(device_name: str) -> str:
    """A GPU preset for a CUDA device name ("NVIDIA H200" -> h200); --gpu names one where this fails."""
    from rpsim.catalog.gpus import gpu_names, resolve_gpu_name
    words = device_name.lower().replace("nvidia", "").replace("geforce", "").replace("rtx", "").split()
    for word in words:
        try:
            return resolve_gpu_name(word)
        except SpecError:
            continue
    raise SpecError(f"cannot tell the GPU preset of {device_name!r}; pass --gpu (choices: {', '.join(gpu_names())})")


def profile(args: argparse.Namespace) -> int:
    from rpexec.profile import make_profile
    from rpsim.catalog import load_model
    from rpsim.report.files import write_json_atomic
    if args.device == "cuda" and not __import__("torch").cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available; valid choices here: cpu")
    for flag, value in (("--seq", args.seq), ("--mb-size", args.mb_size), ("--reps", args.reps)):
        if value < 1:
            raise SpecError(f"{flag} {value}: must be an integer >= 1")
    dtype = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    data = make_profile(load_model(args.model), args.seq, args.mb_size, dtype, args.device, args.reps,
                        host_step_only=args.host_step_only)
    write_json_atomic(args.output, data)
    layers = "" if args.host_step_only else (
        f"layer forward {data['layers'][1]['forward_s'] * 1e3:.3f} ms, backward "
        f"{data['layers'][1]['backward_s'] * 1e3:.3f} ms at {args.mb_size}x{args.seq} tokens ({dtype}); ")
    print(f"rpexec: wrote {args.output}: {layers}"
          f"CPU optimizer: Adam + refresh {data['cpu']['adam_params_per_s'] / 1e9:.2f} G params/s, "
          f"gradient accumulation {data['cpu']['grad_accumulate_params_per_s'] / 1e9:.2f} G params/s per download")
    for step in data["cpu"]["layer_steps"]:
        print(f"rpexec: the STEP over {step['layer']} ({step['params'] / 1e6:.1f}M params) on {step['threads']} threads: "
              f"Adam + refresh {step['adam_refresh_s'] * 1e3:.1f} ms, first gradient {step['widen_s'] * 1e3:.1f} ms, "
              f"each later one {step['later_pass_s'] * 1e3:.1f} ms")
    return 0


def check_run_flags(args: argparse.Namespace, plan) -> None:
    from rpexec.runtime import Fault
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise SpecError(f"--lr {args.lr}: the learning rate must be a finite number > 0")
    if not (math.isfinite(args.watchdog_s) and args.watchdog_s > 0):
        raise SpecError(f"--watchdog-s {args.watchdog_s}: must be a finite number of seconds > 0")
    if args.inject_fault:
        fault = Fault.parse(args.inject_fault)
        lane = plan.lanes.get((fault.gpu, fault.lane))
        if lane is None or fault.action not in {str(a) for a in lane}:
            raise SpecError(f"--inject-fault {args.inject_fault!r}: the plan has no action {fault.action!r} on "
                            f"GPU {fault.gpu} lane {fault.lane!r}; lanes: "
                            f"{', '.join(f'{g}:{n}' for g, n in plan.lanes)}")


def run(args: argparse.Namespace) -> int:
    from rpexec.checks import check_machine, model_and_shape
    from rpexec.fits import check_machine_memory
    from rpexec.session import RunOptions, run_plan
    from rpexec.step_threads import step_threads
    from rpsim.ir.planio import load_plan
    from rpsim.report.files import write_json_atomic
    plan = load_plan(args.plan)
    model, seq, mb_size, precision = model_and_shape(plan)
    dtype = args.dtype or ("fp32" if args.device == "cpu" else precision)
    check_machine(plan, model, args.device, seq, mb_size, dtype)
    iters = plan.n_iters if args.iters is None else args.iters
    if iters < 1 or iters % plan.n_iters:
        raise SpecError(f"--iters {iters}: must be a positive multiple of the plan's {plan.n_iters} iteration(s)")
    check_run_flags(args, plan)
    import torch
    step_threads(args.optimizer_threads, len(plan.lanes), os.cpu_count() or 1, torch.get_num_threads(),
                 args.device, plan.optimizer == "async")  # checked before any work
    if not args.force:
        check_machine_memory(plan, args.device)
    opts = RunOptions(device=args.device, dtype=dtype, blocks=iters // plan.n_iters, seed=args.seed, lr=args.lr,
                      capture_grads=args.check_grads, watchdog_s=args.watchdog_s, fault=args.inject_fault,
                      stop=threading.Event(), optimizer_threads=args.optimizer_threads,
                      copy_order=args.copy_order)
    # Ctrl-C sets an event the interpreter polls rather than raising KeyboardInterrupt wherever the main
    # thread happens to be: with lane threads alive that sometimes ended the process by SIGINT (exit -2)
    # after the interruption had been reported (seen under load in tests/test_rpexec_cpu.py).
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: opts.stop.set())  # type: ignore[union-attr]
    print(f"rpexec: running {plan.schedule} on {plan.n_gpus} {args.device} device(s) ...", file=sys.stderr, flush=True)
    try:
        result = run_plan(plan, model, seq, mb_size, opts)
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.trace:
        write_json_atomic(args.trace, result.trace.to_json())
    loss0 = sum(v for (mb, it), v in result.losses.items() if it == 0) / plan.n_mb
    print(f"rpexec: {plan.schedule} on {plan.n_gpus} {args.device} device(s), {iters} iteration(s), "
          f"iteration-0 loss {loss0:.6f}, makespan {result.trace.makespan_s:.3f} s")
    if args.check_grads:
        return check(plan, model, seq, mb_size, dtype, args, loss0, result.grads)
    return 0


def check(plan, model, seq, mb_size, dtype, args, loss0, grads) -> int:
    from rpexec.reference import TOLERANCES, compare_grads, reference_grads
    ref_loss, ref = reference_grads(model, seq, mb_size, plan.n_mb, args.seed, dtype, _ref_device(args.device))
    problems = compare_grads(grads, ref, dtype)
    rtol, _ = TOLERANCES[dtype]
    if abs(loss0 - ref_loss) > rtol * abs(ref_loss) + 1e-6:
        problems.insert(0, f"loss {loss0:.6f} differs from the reference's {ref_loss:.6f}")
    n = sum(len(g) for g in ref.values())
    if problems:
        print(f"check-grads FAILED: {len(problems)} of {n} gradients (or the loss) differ:", file=sys.stderr)
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"check-grads ok: loss {loss0:.6f} vs reference {ref_loss:.6f}; all {n} gradient tensors match ({dtype})")
    return 0


def _ref_device(device: str) -> str:
    return "cuda:0" if device == "cuda" else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        check_output_flags(args, getattr(args, "output_flags", {}))  # before any work, not after it
        return int(args.func(args))
    except (SpecError, PlanError) as e:
        if args.debug:
            traceback.print_exc()
        print(f"rpexec: error: {e}", file=sys.stderr)
        return 2
    except Infeasible as e:
        print(f"rpexec: does not fit: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a write that failed after the up-front checks (disk full, a file removed)
        if args.debug:
            traceback.print_exc()
        print(f"rpexec: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):
        print("rpexec: interrupted (Ctrl-C); all lanes stopped", file=sys.stderr)
        return 130
    except ExecError as e:
        if args.debug:
            traceback.print_exc()
        print(f"rpexec: run failed: {e}", file=sys.stderr)
        return 3


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
