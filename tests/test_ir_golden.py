"""Golden compute lanes for small cases, derived by hand from the documented semantics (roundpipe.md,
torch's GPipe / 1F1B orders); each file under tests/golden/ says in its comments how it was derived.
Format: '#' lines are comments; then one line per GPU (gpu 0 first), one action per token, in lane order."""
from __future__ import annotations

from pathlib import Path

import pytest

from rpsim.errors import SpecError
from rpsim.ir import Partition, Plan, parse_action
from rpsim.ir.validate import check_plan
from rpsim.partition import fixed_partition, parse_partition_spec
from rpsim.schedules import get_schedule
from rpsim.schedules.base import BuildOptions

GOLDEN = Path(__file__).parent / "golden"


def read_golden(name: str) -> list[str]:
    lines = [line for line in (GOLDEN / name).read_text().splitlines() if not line.startswith("#")]
    for line in lines:  # every token must be one action in the IR's text grammar, printed canonically
        assert all(str(parse_action(tok)) == tok for tok in line.split()), line
    return lines


def lanes(plan: Plan) -> list[str]:
    return [" ".join(str(a) for a in plan.lane(g, "compute")) for g in range(plan.n_gpus)]


def roundpipe(n_gpus: int, spec: str, n_layers: int, n_mb: int, **options) -> Plan:
    partition = parse_partition_spec(spec, n_layers, roundpipe=True)
    return get_schedule("roundpipe").build(n_gpus, partition, n_mb, BuildOptions(optimizer="async", **options))


def fixed(name: str, n_gpus: int, n_mb: int) -> Plan:
    return get_schedule(name).build(n_gpus, fixed_partition([1] * n_gpus, n_gpus), n_mb, BuildOptions())


CASES = {
    # Rounds of N = 3 microbatches, the authors' simulator's M_R (the default now makes one round of 4).
    "roundpipe_n3_m4.txt": lambda: roundpipe(3, "2,2|0,1,1,1,1", 4, 4, round_size=3),
    "roundpipe_n3_m4_i2.txt": lambda: roundpipe(3, "2,2|0,1,1,1,1", 4, 4, n_iters=2, round_size=3),
    "roundpipe_paper_n4_m3.txt": lambda: roundpipe(4, "1|0,1", 1, 3, round_size=1),
    "roundpipe_earliest_free_n4_m3.txt": lambda: roundpipe(4, "1|0,1", 1, 3, round_size=1, g0_rule="earliest-free",
                                                           fwd_stage_s=(1.0,), bwd_stage_s=(1.0, 1.0)),
    "gpipe_n2_m3.txt": lambda: fixed("gpipe", 2, 3),
    "gpipe_n3_m4.txt": lambda: fixed("gpipe", 3, 4),
    "1f1b_n3_m4.txt": lambda: fixed("1f1b", 3, 4),
    "1f1b_n3_m2.txt": lambda: fixed("1f1b", 3, 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compute_lanes_match_the_golden_file(name):
    plan = CASES[name]()
    check_plan(plan)
    assert lanes(plan) == read_golden(name)


def test_every_golden_file_has_a_case():
    assert sorted(p.name for p in GOLDEN.glob("*.txt")) == sorted(CASES)


def test_the_golden_partition_is_the_documented_one():
    """'2,2|0,1,1,1,1' on 4 layers: pipeline layers 0 (embed), 1-4, 5 (head); backward counts in execution
    order, the first being the layers fused with the head (none here)."""
    p = parse_partition_spec("2,2|0,1,1,1,1", 4, roundpipe=True)
    assert p == Partition(fwd=((0, 3), (3, 5)), bwd=((0, 2), (2, 3), (3, 4), (4, 5), (5, 6)), fused=True)


@pytest.mark.parametrize(("fwd_s", "bwd_s", "message"), [
    (None, None, "needs per-stage time estimates"),
    ((1.0,), (1.0,), r"bwd_stage_s have 1 / 1 entries; the partition has 1 forward / 2 backward stages"),
    ((1.0, 1.0), (1.0, 1.0), r"have 2 / 2 entries; the partition has 1 forward / 2 backward"),
])
def test_earliest_free_needs_one_time_estimate_per_stage(fwd_s, bwd_s, message):
    with pytest.raises(SpecError, match=message):
        roundpipe(4, "1|0,1", 1, 3, round_size=1, g0_rule="earliest-free", fwd_stage_s=fwd_s, bwd_stage_s=bwd_s)
