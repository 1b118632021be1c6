"""Schedule traits as data: every builder declares TRAITS, placements map stages as documented, and no
code outside rpsim/schedules/ tests a schedule's name (the identity of a schedule lives in its builder)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rpsim.schedules import SCHEDULES, traits_of
from rpsim.schedules.traits import CONTIGUOUS, LOOPED, V_SHAPED, ScheduleTraits, VirtualStages

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_builder_declares_its_traits(name):
    module = SCHEDULES[name]
    assert isinstance(module.TRAITS, ScheduleTraits)
    assert module.NAME == name and module.DESCRIPTION
    t = module.TRAITS
    assert t.stateless == (t.placement.gpu_of is None)
    assert t.asymmetric_partition <= t.stateless  # a FWD|BWD partition needs stages without a home GPU


def test_placements_map_stages_to_gpus_as_documented():
    assert [CONTIGUOUS.gpu_of(s, 4, 4) for s in range(4)] == [0, 1, 2, 3]
    assert [LOOPED.gpu_of(s, 4, 12) for s in range(12)] == [0, 1, 2, 3] * 3
    # torch generate_stage_to_rank_mapping(style="v"): GPU g holds stages g and 2N - 1 - g
    assert [V_SHAPED.gpu_of(s, 4, 8) for s in range(8)] == [0, 1, 2, 3, 3, 2, 1, 0]


def test_virtual_stage_policy():
    assert VirtualStages(fixed=2).resolve(5, 1) == 2 and VirtualStages(fixed=2).choices(9) == [2]
    chosen = VirtualStages(fixed=None, minimum=2)
    assert chosen.resolve(None, 1) == 1 and chosen.resolve(3, 1) == 3 and chosen.choices(4) == [2, 3, 4]


def _code_outside_schedules() -> list[tuple[Path, str]]:
    out = []
    for package in ("rpsim", "rpexec"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "schedules" in path.relative_to(ROOT).parts:
                continue
            out.append((path, path.read_text()))
    return out


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_no_code_outside_schedules_tests_a_schedule_name(name):
    """A quoted schedule name ("1f1b", 'roundpipe') in library code is a schedule-name test in disguise;
    names followed by '-' are other things (the roundpipe-paper partitioner)."""
    pattern = re.compile(r"""["']""" + re.escape(name) + r"""["']""")
    hits = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
            for p, text in _code_outside_schedules() for m in pattern.finditer(text)]
    assert not hits, f"schedule name {name!r} tested outside rpsim/schedules/: {hits}"


def test_search_reference_and_async_are_traits():
    assert sum(m.TRAITS.search_reference for m in SCHEDULES.values()) <= 1
    for name, module in SCHEDULES.items():
        if module.TRAITS.optimizer == "async":
            assert traits_of(name).stateless  # staleness-1 steps need weights in host memory
