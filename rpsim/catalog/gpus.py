"""GPU presets from gpus.toml, looked up by name or alias."""
from __future__ import annotations

from typing import Any

from rpsim.catalog.data import preset_table
from rpsim.errors import SpecError, choices_message
from rpsim.specs.gpu import EfficiencyCurve, GPUSpec
from rpsim.units import GiB


def gpu_names() -> list[str]:
    return list(preset_table("gpus.toml"))


def _aliases() -> dict[str, str]:
    table = preset_table("gpus.toml")
    out = {name: name for name in table}
    for name, entry in table.items():
        for alias in entry.get("aliases", []):
            out[alias] = name
    return out


def resolve_gpu_name(name: str) -> str:
    aliases = _aliases()
    key = name.strip().lower()
    if key not in aliases:
        raise SpecError(choices_message("gpu", name, aliases))
    return aliases[key]


def gpu_entry(name: str) -> dict[str, Any]:
    return preset_table("gpus.toml")[resolve_gpu_name(name)]


def load_gpu(name: str) -> GPUSpec:
    canonical = resolve_gpu_name(name)
    e = preset_table("gpus.toml")[canonical]
    return GPUSpec(
        name=canonical,
        bf16_flops_per_s=e["bf16_tflops"] * 1e12,
        fp16_acc16_flops_per_s=e["fp16_acc16_tflops"] * 1e12,
        fp32_flops_per_s=e["fp32_tflops"] * 1e12,
        memory_bytes=e["memory_gib"] * GiB,
        memory_bandwidth_bytes_per_s=e["memory_bandwidth_gb_per_s"] * 1e9,
        efficiency=EfficiencyCurve(tuple((float(f), float(x)) for f, x in e["efficiency"])),
        kernel_floor_s=e["kernel_floor_us"] * 1e-6,
        pcie_generation=e["pcie_gen"],
        pcie_width=e["pcie_width"],
        nvlink_bytes_per_s=(e["nvlink_gb_per_s"] * 1e9) or None,
        source=e["source"],
    )
