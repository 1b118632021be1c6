"""plan.json: the versioned file form of a Plan (docs/formats.md). Loading reports the JSON path of the
first error, then runs every plan check."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from rpsim.errors import PlanError
from rpsim.ir.action import Action, parse_action
from rpsim.ir.deps import DEPS_VERSION
from rpsim.ir.plan import Partition, Plan
from rpsim.ir.weight_deps import GRAD_FENCES, grad_fence_of
from rpsim.jsonfile import read_json

FORMAT = "rpsim.plan"
VERSION = 1
_KEYS = {"format", "version", "deps_version", "schedule", "n_gpus", "n_mb", "n_iters", "recompute", "optimizer",
         "level", "residency", "options", "setup", "partition", "lanes", "extra_edges"}
_REQUIRED = ("format", "version", "schedule", "n_gpus", "n_mb", "partition", "lanes")
# Values a Plan field may take (Plan's comments; recompute as in specs.training, which ir does not import).
# Checked on load: an unknown level or optimizer used to load silently and simulate as something else.
_CHOICES = {"recompute": ("none", "stage", "layer"), "optimizer": ("sync", "async"),
            "level": ("compute", "ideal", "hop", "pcie"), "residency": ("", "resident", "streamed", "stateless")}
# residency "": a plan written before the field existed (or a compute plan): derived from its lanes.
_DEFAULT_CHOICES = {"recompute": "stage", "optimizer": "sync", "level": "compute", "residency": ""}


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "deps_version": DEPS_VERSION, "schedule": plan.schedule,
        "n_gpus": plan.n_gpus, "n_mb": plan.n_mb, "n_iters": plan.n_iters, "recompute": plan.recompute,
        "optimizer": plan.optimizer, "level": plan.level, "residency": plan.residency, "options": dict(plan.options), "setup": dict(plan.setup),
        "partition": plan.partition.to_json(),
        "lanes": [{"gpu": gpu, "lane": lane, "actions": [str(a) for a in actions]}
                  for (gpu, lane), actions in sorted(plan.lanes.items())],
        "extra_edges": [[[u[0], str(u[1])], [v[0], str(v[1])]] for u, v in plan.extra_edges],
    }


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
    if key not in data:
        raise PlanError(f"plan {path}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise PlanError(f"plan {path}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _count(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value: int = default if key not in data and default is not None else _get(data, key, int, "$")
    if value < 1:
        raise PlanError(f"plan $.{key}: must be >= 1, got {value!r}")
    return value


def _choice(data: dict[str, Any], key: str) -> str:
    value: str = _get(data, key, str, "$") if key in data else _DEFAULT_CHOICES[key]
    if value not in _CHOICES[key]:
        raise PlanError(f"plan $.{key}: {value!r} unknown; valid choices: {', '.join(_CHOICES[key])}")
    return value


def _action(text: Any, path: str) -> Action:
    if not isinstance(text, str):
        raise PlanError(f"plan {path}: expected an action string, got {text!r}")
    try:
        return parse_action(text)
    except PlanError as e:
        raise PlanError(f"plan {path}: {e}") from None


def _partition(data: Any) -> Partition:
    if not isinstance(data, dict):
        raise PlanError("plan $.partition: expected an object with fwd, bwd, fused")
    ranges = {}
    for side in ("fwd", "bwd"):
        items = _get(data, side, list, "$.partition")
        for i, r in enumerate(items):
            if not (isinstance(r, list) and len(r) == 2
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in r)):
                raise PlanError(f"plan $.partition.{side}[{i}]: expected [start, end], got {r!r}")
        ranges[side] = tuple((r[0], r[1]) for r in items)
    fused = data.get("fused", False)
    if not isinstance(fused, bool):  # bool("no") is True: a string here must not flip the partition
        raise PlanError(f"plan $.partition.fused: expected true or false, got {fused!r}")
    try:
        return Partition(fwd=ranges["fwd"], bwd=ranges["bwd"], fused=fused)
    except PlanError as e:
        raise PlanError(f"plan $.partition: {e}") from None


def plan_from_json(data: Any) -> Plan:
    if not isinstance(data, dict):
        raise PlanError("plan $: expected a JSON object")
    unknown = set(data) - _KEYS
    if unknown:
        raise PlanError(f"plan $: unknown key {min(unknown)!r}; valid keys: {', '.join(sorted(_KEYS))}")
    for key in _REQUIRED:
        if key not in data:
            raise PlanError(f"plan $: missing key {key!r}")
    if data["format"] != FORMAT or data["version"] != VERSION:
        raise PlanError(f"plan $.format/$.version: expected {FORMAT!r} version {VERSION}, "
                        f"got {data['format']!r} version {data['version']!r}")
    if data.get("deps_version", DEPS_VERSION) != DEPS_VERSION:
        raise PlanError(f"plan $.deps_version: this rpsim derives dependencies by rule {DEPS_VERSION}, "
                        f"the plan was written for {data['deps_version']}")
    lanes: dict[tuple[int, str], tuple[Action, ...]] = {}
    for i, entry in enumerate(_get(data, "lanes", list, "$")):
        path = f"$.lanes[{i}]"
        if not isinstance(entry, dict):
            raise PlanError(f"plan {path}: expected an object with gpu, lane, actions")
        gpu, lane = _get(entry, "gpu", int, path), _get(entry, "lane", str, path)
        acts = _get(entry, "actions", list, path)
        if (gpu, lane) in lanes:  # a second entry would silently replace the first
            raise PlanError(f"plan {path}: lane {lane!r} of gpu {gpu} is listed twice")
        lanes[(gpu, lane)] = tuple(_action(t, f"{path}.actions[{j}]") for j, t in enumerate(acts))
    edges = []
    for i, e in enumerate(_get(data, "extra_edges", list, "$") if "extra_edges" in data else []):
        try:
            (gu, au), (gv, av) = e
        except (TypeError, ValueError):
            raise PlanError(f"plan $.extra_edges[{i}]: expected [[gpu, action], [gpu, action]]") from None
        if not all(isinstance(g, int) and not isinstance(g, bool) for g in (gu, gv)):
            raise PlanError(f"plan $.extra_edges[{i}]: GPU indices must be integers, got {gu!r} and {gv!r}")
        edges.append(((gu, _action(au, f"$.extra_edges[{i}][0]")), (gv, _action(av, f"$.extra_edges[{i}][1]"))))
    # Type and range checks here, with the JSON path: a wrong type used to escape as a TypeError or
    # AttributeError deep in validation or the simulator (a traceback instead of exit code 2).
    options = _get(data, "options", dict, "$") if "options" in data else {}
    if grad_fence_of(options) not in GRAD_FENCES:  # it picks a dependency rule
        raise PlanError(f"plan $.options.grad_fence: {options['grad_fence']!r} unknown; "
                        f"valid choices: {', '.join(GRAD_FENCES)}")
    setup = _get(data, "setup", dict, "$") if "setup" in data else {}
    return Plan(
        schedule=_get(data, "schedule", str, "$"), n_gpus=_count(data, "n_gpus"),
        n_mb=_count(data, "n_mb"), partition=_partition(data["partition"]), lanes=dict(sorted(lanes.items())),
        n_iters=_count(data, "n_iters", 1), recompute=_choice(data, "recompute"),
        optimizer=_choice(data, "optimizer"), level=_choice(data, "level"), residency=_choice(data, "residency"),
        options=options, setup=setup, extra_edges=tuple(edges))


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write plan.json with its profile path relative to the plan's folder, so the plan and its profile
    can move together (a clean checkout, another machine) and still find each other."""
    from rpsim.report.files import write_json_atomic
    data = plan_to_json(plan)
    profile = data["setup"].get("profile")
    if isinstance(profile, str) and profile:
        data["setup"] = {**data["setup"], "profile": os.path.relpath(os.path.abspath(profile),
                                                                     os.path.dirname(os.path.abspath(path)))}
    write_json_atomic(path, data)


def _resolve_profile(plan: Plan, path: str | Path) -> Plan:
    """A relative profile path is relative to the plan's folder (save_plan). Plans written before that
    held it relative to the directory rpsim ran in; such a path is kept where only it exists."""
    profile = plan.setup.get("profile")
    if not isinstance(profile, str) or not profile or os.path.isabs(profile):
        return plan
    beside_plan = os.path.join(os.path.dirname(os.path.abspath(path)), profile)
    if not os.path.exists(beside_plan) and os.path.exists(profile):
        return plan
    return replace(plan, setup={**plan.setup, "profile": os.path.normpath(beside_plan)})


def load_plan(path: str | Path) -> Plan:
    from rpsim.ir.validate import check_plan
    plan = _resolve_profile(plan_from_json(read_json(path, "plan file", PlanError)), path)
    check_plan(plan)
    return plan
