"""`rpsim` entry point: subcommand dispatch and the one error policy (exit 2 for bad input, no traceback
unless --debug; exit 1 when no plan is feasible)."""
from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from rpsim.cli import (
    cmd_compare,
    cmd_costs,
    cmd_export,
    cmd_list,
    cmd_plot,
    cmd_search,
    cmd_simulate,
    cmd_validate,
)
from rpsim.cli.help_text import EXIT_CODES, add_debug_flag
from rpsim.errors import Infeasible, PlanError, SpecError
from rpsim.gc_pause import gc_paused
from rpsim.report.outputs import check_output_flags

COMMANDS = {"list": cmd_list, "costs": cmd_costs, "compare": cmd_compare, "simulate": cmd_simulate,
            "export": cmd_export, "validate": cmd_validate,
            "search": cmd_search, "plot": cmd_plot}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpsim", description="Simulate and compare pipeline-parallel "
                                     "training schedules on PCIe-bound GPU servers.", epilog=EXIT_CODES)
    add_debug_flag(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
        command = sub.choices[name]
        add_debug_flag(command, top_level=False)
        command.epilog = EXIT_CODES
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage error
        return int(e.code or 0)
    debug = args.debug
    try:
        check_output_flags(args, getattr(args, "output_flags", {}))  # before any work, not after it
        with gc_paused():
            return int(args.func(args))
    except (SpecError, PlanError) as e:
        if debug:
            traceback.print_exc()
        print(f"rpsim: error: {e}", file=sys.stderr)
        return 2
    except Infeasible as e:
        print(f"rpsim: infeasible: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt as e:  # Ctrl-C (130) or SIGTERM during a search (143); no file is written
        if debug:
            traceback.print_exc()
        terminated = type(e).__name__ == "Terminated"
        print(f"rpsim: {'terminated (SIGTERM)' if terminated else 'interrupted (Ctrl-C)'}; workers stopped",
              file=sys.stderr)
        return 143 if terminated else 130
    except OSError as e:  # a write that failed after the up-front checks (disk full, a file removed)
        if debug:
            traceback.print_exc()
        print(f"rpsim: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
