"""What every `rpsim` help page shares: the exit codes and the --debug flag, which is accepted before or
after the subcommand (`rpsim --debug compare ...` and `rpsim compare ... --debug`)."""
from __future__ import annotations

import argparse

EXIT_CODES = ("exit codes: 0 ok; 1 no feasible plan (the message says which memory is short); "
              "2 bad input (the message names the flag, the value and the valid choices); "
              "130 interrupted (Ctrl-C)")

DEBUG_HELP = "show a traceback for errors (default: off; accepted before or after the subcommand)"


def add_debug_flag(p: argparse.ArgumentParser, top_level: bool) -> None:
    """On a subcommand the flag has no default of its own, so that `rpsim --debug CMD` is not reset to
    False by the subcommand's parser (argparse copies a subparser's defaults over the namespace)."""
    default = False if top_level else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default, help=DEBUG_HELP)
