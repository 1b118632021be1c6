"""GPU presets from gpus.toml, looked up by name or alias."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from rpsim.catalog.data import preset_table
from rpsim.errors import SpecError, choices_message
from rpsim.specs.gemm_table import GemmRateTable
from rpsim.specs.gpu import PRECISIONS, EfficiencyCurve, GPUSpec
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
        gemm_tables=shipped_gemm_tables(canonical),
        attention_rates=shipped_attention_rates(canonical),
        elementwise_bytes_per_s=e["elementwise_gb_per_s"] * 1e9 if "elementwise_gb_per_s" in e else None,
        strided_elementwise_bytes_per_s=(
            _rate_pair(f"gpus.toml [{canonical}]", "strided_elementwise_gb_per_s", e["strided_elementwise_gb_per_s"], 1e9)
            if "strided_elementwise_gb_per_s" in e else None),
    )


def shipped_attention_rates(gpu_name: str) -> tuple[tuple[str, float, float], ...]:
    entry = preset_table("gemm_tables.toml").get(gpu_name, {})
    return tuple((precision, t["attention_tflops"][0] * 1e12, t["attention_tflops"][1] * 1e12)
                 for precision, t in entry.items() if "attention_tflops" in t)


def shipped_gemm_tables(gpu_name: str) -> tuple[tuple[str, GemmRateTable], ...]:
    """The GEMM tables shipped for a GPU (gemm_tables.toml), one per precision, each citing its source."""
    entry = preset_table("gemm_tables.toml").get(gpu_name, {})
    return tuple((precision, GemmRateTable.from_points(t["gemm_tflops"], t["source"],
                                                       where=f"gemm_tables.toml [{gpu_name}.{precision}]"))
                 for precision, t in entry.items())


CALIBRATION_KEYS = {"precision", "elementwise_gb_per_s", "strided_elementwise_gb_per_s", "kernel_floor_us",
                    "attention_tflops", "gemm_tflops"}


def calibrated_gpu(gpu: GPUSpec, t: dict[str, Any], where: str) -> GPUSpec:
    """The GPU with a machine file's measured figures ([gpu_calibration], written by `rpexec calibrate`)
    in place of the preset's: the elementwise (device-memory copy) rate, the strided elementwise rates, kernel floor,
    attention rates, and a GEMM table for the precision measured (which replaces a shipped table of that precision)."""
    unknown = set(t) - CALIBRATION_KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys: {', '.join(sorted(CALIBRATION_KEYS))}")
    precision = t.get("precision", "bf16")
    if precision not in PRECISIONS:
        raise SpecError(choices_message(f"{where} precision", precision, PRECISIONS))
    changes: dict[str, Any] = {}
    for key, field, scale in (("elementwise_gb_per_s", "elementwise_bytes_per_s", 1e9),
                              ("kernel_floor_us", "kernel_floor_s", 1e-6)):
        if key in t:
            changes[field] = _positive(where, key, t[key]) * scale
    if "strided_elementwise_gb_per_s" in t:
        changes["strided_elementwise_bytes_per_s"] = _rate_pair(where, "strided_elementwise_gb_per_s",
                                                                t["strided_elementwise_gb_per_s"], 1e9)
    if "attention_tflops" in t:
        fwd, bwd = _rate_pair(where, "attention_tflops", t["attention_tflops"], 1e12)
        changes["attention_rates"] = ((precision, fwd, bwd),)
    if "gemm_tflops" in t:
        table = GemmRateTable.from_points(t["gemm_tflops"], f"{where} [gpu_calibration]", where=f"{where} gemm_tflops")
        changes["gemm_tables"] = ((precision, table),) + tuple(x for x in gpu.gemm_tables if x[0] != precision)
    return replace(gpu, **changes)


def _rate_pair(where: str, key: str, pair: Any, scale: float) -> tuple[float, float]:
    """A [forward, backward] pair of positive rates, scaled to SI units."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise SpecError(f"{where}: {key} must be [forward, backward], got {pair!r}")
    fwd, bwd = (_positive(where, key, v) * scale for v in pair)
    return fwd, bwd


def _positive(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise SpecError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)
