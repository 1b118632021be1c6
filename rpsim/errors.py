"""Error types shared by rpsim and rpexec: bad input versus expected infeasibility."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class SpecError(ValueError):
    """Bad user input in a spec, preset name, config file or flag (CLI exit code 2)."""


class PlanError(ValueError):
    """A malformed or inconsistent plan (CLI exit code 2)."""


class Infeasible(Exception):
    """An expected outcome: the plan does not fit the machine. Not a bug."""


def choices_message(field: str, value: object, valid: Iterable[str]) -> str:
    """'unknown <field> 'x'; nearest: 'y'; valid: a, b, c' — the one format for bad names."""
    names = sorted(valid)
    near = difflib.get_close_matches(str(value), names, n=1, cutoff=0.3)
    hint = f"; nearest match: {near[0]!r}" if near else ""
    return f"unknown {field} {value!r}{hint}; valid choices: {', '.join(names)}"
