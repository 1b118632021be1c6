"""profile.json: measured or given per-layer times and link figures that override the cost model.

Schema (architecture.md, "Formats"): format "rpsim.profile", version 1, `layers` listing every
pipeline layer in order (embed, layer.0 .. layer.{L-1}, head); optional `conditions`, `links`, `cpu`.
Unknown keys are errors. Times taken at other microbatch tokens scale linearly in tokens. A profile of
the host STEP alone (`rpexec profile --host-step-only`) has `cpu.layer_steps` and no `layers`: the layers
keep the cost model's times (a calibrated machine file's GEMM table held e03's GPU work to 0-3%, where
a profile's single-layer timings ran 5-30% fast of the runs; README, e03, session 14).

`cpu.layer_steps` (optional): rpexec's host STEP timed over the model's own transformer layer, each entry
one layer kind at one thread count: {"params", "threads", "adam_refresh_s", "widen_s", "later_pass_s"},
the seconds of its Adam + refresh, of its first staged gradient's widening, and of one later staged
gradient's summation (rpsim.costs.cpu_optimizer prices a layer of that many parameters from them).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rpsim.costs.layer_costs import ModelCosts
from rpsim.errors import SpecError
from rpsim.jsonfile import read_json

FORMAT = "rpsim.profile"
VERSION = 1
_TOP = {"format", "version", "conditions", "layers", "links", "cpu"}
_CONDITIONS = {"device", "mb_tokens", "dtype", "seq_len", "mb_size", "host", "torch", "notes"}
_LAYER = {"name", "forward_s", "backward_s", "recompute_s", "param_bytes", "activation_bytes"}
_LINKS = {"hop_s", "h2d_bytes_per_s", "d2h_bytes_per_s", "duplex_bytes_per_s", "p2p_bytes_per_s",
          "h2d_by_size", "d2h_by_size"}
_CPU = {"adam_params_per_s", "grad_accumulate_params_per_s", "grad_widen_params_per_s", "layer_steps"}
_LAYER_STEP = {"params", "threads", "adam_refresh_s", "widen_s", "later_pass_s", "n_staged", "layer"}


@dataclass(frozen=True)
class LayerStepTiming:
    """rpexec's host STEP over one transformer layer of `params` parameters on `threads` intra-op threads:
    seconds of Adam + refresh, of the first staged gradient's widening copy, and of each later staged
    gradient's summation (with the layer's own tensors, so as much of each stays in the cache as in a run)."""
    params: float
    threads: int
    adam_refresh_s: float
    widen_s: float
    later_pass_s: float


@dataclass(frozen=True)
class LayerTiming:
    name: str
    forward_s: float
    backward_s: float
    recompute_s: float
    param_bytes: float | None = None
    activation_bytes: float | None = None


@dataclass(frozen=True)
class Profile:
    layers: tuple[LayerTiming, ...]
    mb_tokens: int | None = None
    device: str | None = None
    hop_s: float | None = None
    h2d_bytes_per_s: float | None = None
    d2h_bytes_per_s: float | None = None
    duplex_bytes_per_s: float | None = None
    p2p_bytes_per_s: float | None = None
    adam_params_per_s: float | None = None
    grad_accumulate_params_per_s: float | None = None
    grad_widen_params_per_s: float | None = None  # the first staged gradient's copy (rpsim.costs.cpu_optimizer)
    layer_steps: tuple[LayerStepTiming, ...] = ()  # the STEP over the model's own layers (cpu.layer_steps)
    source: str = ""

    def apply(self, costs: ModelCosts) -> ModelCosts:
        """Replace the cost model's per-layer times (and bytes where given), scaled to costs.mb_tokens; a
        host-STEP-only profile (no layers) leaves them."""
        if not self.layers:
            return costs
        if len(self.layers) != len(costs.layers):
            raise SpecError(f"profile {self.source}: layers has {len(self.layers)} entries, the model has "
                            f"{len(costs.layers)} pipeline layers ({costs.layers[0].name} .. {costs.layers[-1].name})")
        scale, note = 1.0, None
        if self.mb_tokens and self.mb_tokens != costs.mb_tokens:
            scale = costs.mb_tokens / self.mb_tokens
            note = (f"profile times taken at {self.mb_tokens} tokens per microbatch, scaled linearly to "
                    f"{costs.mb_tokens} (x{scale:.3g})")
        out = []
        for i, (timing, layer) in enumerate(zip(self.layers, costs.layers)):
            if timing.name != layer.name:
                raise SpecError(f"profile {self.source}: layers[{i}].name is {timing.name!r}, expected {layer.name!r}")
            changes: dict[str, Any] = {"forward_s": timing.forward_s * scale, "backward_s": timing.backward_s * scale,
                                       "recompute_s": timing.recompute_s * scale}
            if timing.param_bytes is not None:
                changes["weight_bytes"] = timing.param_bytes
            if timing.activation_bytes is not None:
                changes["activation_bytes"] = timing.activation_bytes * scale
            out.append(replace(layer, **changes))
        return costs.with_layers(tuple(out), note)


def _check(where: str, table: Any, valid: set[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SpecError(f"profile {where}: expected an object")
    for key in table:
        if key not in valid:
            raise SpecError(f"profile {where}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")
    return table


def _number(where: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SpecError(f"profile {where}: expected a non-negative number, got {value!r}")
    return float(value)


def _layer_steps(entries: Any) -> tuple[LayerStepTiming, ...]:
    if not isinstance(entries, list):
        raise SpecError("profile $.cpu.layer_steps: expected a list")
    out = []
    for i, entry in enumerate(entries):
        where = f"$.cpu.layer_steps[{i}]"
        e = _check(where, entry, _LAYER_STEP)
        for key in ("params", "threads", "adam_refresh_s", "widen_s", "later_pass_s"):
            if key not in e:
                raise SpecError(f"profile {where}: missing key {key!r}")
        values = {k: _number(f"{where}.{k}", e[k]) for k in ("params", "adam_refresh_s", "widen_s", "later_pass_s")}
        if not all(values.values()):
            raise SpecError(f"profile {where}: params and every time must be positive, got {values}")
        threads = e["threads"]
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SpecError(f"profile {where}.threads: expected a positive integer, got {threads!r}")
        out.append(LayerStepTiming(threads=threads, **values))  # type: ignore[arg-type]
    return tuple(out)


def profile_from_dict(data: Any, source: str = "<dict>") -> Profile:
    data = _check("$", data, _TOP)
    if data.get("format") != FORMAT:
        raise SpecError(f"profile $.format: expected {FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERSION:
        raise SpecError(f"profile $.version: expected {VERSION}, got {data.get('version')!r}")
    host_step_only = "layers" not in data and bool(data.get("cpu", {}).get("layer_steps"))
    if not host_step_only and ("layers" not in data or not isinstance(data["layers"], list) or not data["layers"]):
        raise SpecError("profile $.layers: required, a non-empty list (only a profile of the host STEP alone, "
                        "with cpu.layer_steps, leaves it out)")
    layers = []
    for i, entry in enumerate(data.get("layers", [])):
        e = _check(f"$.layers[{i}]", entry, _LAYER)
        for key in ("name", "forward_s", "backward_s"):
            if key not in e:
                raise SpecError(f"profile $.layers[{i}]: missing key {key!r}")
        fwd = _number(f"$.layers[{i}].forward_s", e["forward_s"])
        layers.append(LayerTiming(
            name=str(e["name"]), forward_s=fwd, backward_s=_number(f"$.layers[{i}].backward_s", e["backward_s"]),
            recompute_s=_number(f"$.layers[{i}].recompute_s", e.get("recompute_s", fwd)),
            param_bytes=_number(f"$.layers[{i}].param_bytes", e.get("param_bytes"), True),
            activation_bytes=_number(f"$.layers[{i}].activation_bytes", e.get("activation_bytes"), True)))
    cond = _check("$.conditions", data.get("conditions", {}), _CONDITIONS)
    links = _check("$.links", data.get("links", {}), _LINKS)
    cpu = _check("$.cpu", data.get("cpu", {}), _CPU)
    link_value = {k: _number(f"$.links.{k}", links.get(k), True) for k in
                  ("hop_s", "h2d_bytes_per_s", "d2h_bytes_per_s", "duplex_bytes_per_s", "p2p_bytes_per_s")}
    mb_tokens = cond.get("mb_tokens")
    if mb_tokens is not None and (not isinstance(mb_tokens, int) or mb_tokens < 1):
        raise SpecError(f"profile $.conditions.mb_tokens: expected a positive integer, got {mb_tokens!r}")
    return Profile(layers=tuple(layers), mb_tokens=mb_tokens, device=cond.get("device"), **link_value,
                   adam_params_per_s=_number("$.cpu.adam_params_per_s", cpu.get("adam_params_per_s"), True),
                   grad_accumulate_params_per_s=_number("$.cpu.grad_accumulate_params_per_s",
                                                        cpu.get("grad_accumulate_params_per_s"), True),
                   grad_widen_params_per_s=_number("$.cpu.grad_widen_params_per_s", cpu.get("grad_widen_params_per_s"),
                                                   True),
                   layer_steps=_layer_steps(cpu.get("layer_steps", [])), source=source)


def load_profile(path: str | Path) -> Profile:
    return profile_from_dict(read_json(path, "--profile file", SpecError), source=str(path))
