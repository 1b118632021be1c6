"""`rpsim export --library-plan`: a RoundPipe plan's partition as the roundpipe library's ModelExecutePlan
(fwd_plan shallow to deep, bwd_plan deepest first, bwd_plan[0] the fused stage that starts where the
forward plan ends), its round trip, and the CLI's refusals."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.cli.main import main as rpsim_main
from rpsim.errors import PlanError
from rpsim.export.library_plan import library_plan, partition_from_library_plan
from rpsim.ir.plan import Partition
from rpsim.ir.planio import load_plan
from tests.rpexec_helpers import TINY, write_config


@pytest.fixture(scope="module")
def roundpipe_plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lib")
    config = write_config(tmp, TINY)
    out = tmp / "p.json"
    assert rpsim_main(["export", "--model", str(config), "--gpus", "4090x2", "--seq", "16", "--global-batch", "8",
                       "--n-mb", "4", "--schedule", "roundpipe", "-o", str(out)]) == 0
    return load_plan(out)


def test_golden_ranges_for_a_known_partition(roundpipe_plan):
    """Forward [0,4) [4,6), backward [0,3) [3,6) and fused [6,10): the library gets the forward stages in
    order and the backward stages deepest first, the fused one leading."""
    partition = Partition(fwd=((0, 4), (4, 6)), bwd=((0, 3), (3, 6), (6, 10)), fused=True)
    doc = library_plan(replace(roundpipe_plan, partition=partition))
    assert doc["fwd_plan"] == [[0, 4], [4, 6]]
    assert doc["bwd_plan"] == [[6, 10], [3, 6], [0, 3]]
    assert doc["n_layers"] == 10 and doc["num_microbatch"] == 4
    assert doc["format"] == "roundpipe-execute-plan" and doc["version"] == 1


@st.composite
def fused_partitions(draw):
    n = draw(st.integers(2, 40))
    fused_start = draw(st.integers(0, n - 1))
    fwd_cuts = sorted(draw(st.sets(st.integers(1, max(1, fused_start - 1)), max_size=6))) if fused_start > 1 else []
    bwd_cuts = sorted(draw(st.sets(st.integers(1, max(1, fused_start - 1)), max_size=6))) if fused_start > 1 else []

    def ranges(cuts, end):
        points = [0, *[c for c in cuts if 0 < c < end], end]
        return tuple((a, b) for a, b in zip(points, points[1:]))
    fwd = ranges(fwd_cuts, fused_start) if fused_start else ()
    bwd = (ranges(bwd_cuts, fused_start) if fused_start else ()) + ((fused_start, n),)
    return Partition(fwd=fwd, bwd=bwd, fused=True)


@settings(max_examples=60, deadline=None)
@given(fused_partitions())
def test_round_trip_and_library_invariants(roundpipe_plan, partition):
    doc = json.loads(json.dumps(library_plan(replace(roundpipe_plan, partition=partition))))
    assert partition_from_library_plan(doc) == partition
    fwd, bwd = doc["fwd_plan"], doc["bwd_plan"]
    # the library's check for a fused plan: forward covers [0, f) in order, bwd_plan[0] starts at f,
    # bwd_plan read from its end covers [0, n) in order
    assert [a for a, _ in fwd] == ([0] + [b for _, b in fwd[:-1]] if fwd else [])
    assert bwd[0][0] == (fwd[-1][1] if fwd else 0) and bwd[0][1] == doc["n_layers"]
    back = list(reversed(bwd))
    assert back[0][0] == 0 and all(x[1] == y[0] for x, y in zip(back, back[1:]))


def test_non_fused_partition_is_refused(roundpipe_plan):
    partition = Partition.same(((0, 5), (5, 10)))
    with pytest.raises(PlanError, match="no fused last stage"):
        library_plan(replace(roundpipe_plan, partition=partition))


def test_bad_library_files_are_refused():
    good = {"format": "roundpipe-execute-plan", "version": 1, "n_layers": 4, "fwd_plan": [[0, 2]],
            "bwd_plan": [[2, 4], [0, 2]]}
    assert partition_from_library_plan(good).fwd == ((0, 2),)
    with pytest.raises(PlanError, match="format"):
        partition_from_library_plan({**good, "format": "x"})
    with pytest.raises(PlanError, match="n_layers"):
        partition_from_library_plan({**good, "n_layers": 5})
    with pytest.raises(PlanError):  # the fused stage must start where the forward plan ends
        partition_from_library_plan({**good, "fwd_plan": [[0, 3]]})


def test_cli_export_and_convert_agree(tmp_path, capsys):
    config = write_config(tmp_path, TINY)
    flags = ["--model", str(config), "--gpus", "4090x2", "--seq", "16", "--global-batch", "8", "--n-mb", "4"]
    plan, lib, lib2 = tmp_path / "p.json", tmp_path / "l.json", tmp_path / "l2.json"
    assert rpsim_main(["export", *flags, "--schedule", "roundpipe", "-o", str(plan), "--library-plan", str(lib)]) == 0
    assert rpsim_main(["export", "--plan", str(plan), "--library-plan", str(lib2)]) == 0
    assert json.loads(lib.read_text()) == json.loads(lib2.read_text())
    assert partition_from_library_plan(json.loads(lib.read_text())) == load_plan(plan).partition
    assert rpsim_main(["export", *flags, "--schedule", "gpipe", "--library-plan", str(tmp_path / "g.json")]) == 2
    assert "no fused last stage" in capsys.readouterr().err
    assert rpsim_main(["export", "--plan", str(plan)]) == 2
    assert rpsim_main(["export", *flags, "--schedule", "roundpipe"]) == 2  # nothing to write
    assert not (tmp_path / "g.json").exists()


def test_search_writes_the_best_plans_library_partition(tmp_path):
    config = write_config(tmp_path, TINY)
    lib, plan = tmp_path / "l.json", tmp_path / "best.json"
    assert rpsim_main(["search", "--model", str(config), "--gpus", "4090x2", "--seq", "16", "--global-batch", "8",
                       "--n-mb", "4", "--schedules", "roundpipe", "--budget", "20", "--confirm", "2", "--jobs", "1",
                       "--export", str(plan), "--library-plan", str(lib)]) == 0
    assert partition_from_library_plan(json.loads(lib.read_text())) == load_plan(plan).partition
