"""The executor's failures and its precision names, kept free of torch so that `rpexec --help` and the
argument parser start without importing it (torch takes seconds to import)."""
from __future__ import annotations

# The dtype names of rpexec.session.DTYPES (which maps them to torch dtypes).
DTYPE_NAMES = ("fp32", "bf16", "fp16", "fp16-acc16")


class ExecError(RuntimeError):
    """A lane failed; the message names the GPU, lane and action."""


class Interrupted(ExecError):
    """Ctrl-C: every lane was told to stop."""
