"""Lowering passes: pure Plan -> Plan rewrites that add the transfers, optimizer steps and frees a
fidelity level simulates. `ideal` and `hop` keep the compute-only plan; `pcie` adds everything."""
from rpsim.passes.lower import LEVELS, LoweringContext, lower

__all__ = ["LEVELS", "LoweringContext", "lower"]
