"""Frozen specs with SI units (units in field names): model, hardware, training. No I/O here."""
from rpsim.specs.gpu import PRECISIONS, EfficiencyCurve, GPUSpec
from rpsim.specs.model import ModelSpec
from rpsim.specs.server import HostSpec, LinkSpec, PCIeLinkSpec, ServerSpec, SocketSpec, SwitchSpec
from rpsim.specs.training import TrainingSpec

__all__ = [
    "PRECISIONS",
    "EfficiencyCurve",
    "GPUSpec",
    "HostSpec",
    "LinkSpec",
    "ModelSpec",
    "PCIeLinkSpec",
    "ServerSpec",
    "SocketSpec",
    "SwitchSpec",
    "TrainingSpec",
]
