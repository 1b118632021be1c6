"""Schedule builders, one file each, found by discovery: adding a schedule means adding one file that
defines NAME, DESCRIPTION, TRAITS (rpsim.schedules.traits.ScheduleTraits) and build(...)."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from rpsim.errors import SpecError, choices_message
from rpsim.schedules.traits import ScheduleTraits

_SKIP = {"base", "traits"}


def _discover() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "build"):
            assert isinstance(getattr(module, "TRAITS", None), ScheduleTraits), f"{info.name}: TRAITS missing"
            found[module.NAME] = module
    order = ["gpipe", "1f1b", "interleaved", "looped-bfs", "roundpipe", "roundpipe-sync"]
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0])))


SCHEDULES: dict[str, ModuleType] = _discover()


def get_schedule(name: str) -> ModuleType:
    if name not in SCHEDULES:
        raise SpecError(choices_message("schedule", name, SCHEDULES))
    return SCHEDULES[name]


def traits_of(name: str) -> ScheduleTraits:
    return get_schedule(name).TRAITS  # type: ignore[no-any-return]
