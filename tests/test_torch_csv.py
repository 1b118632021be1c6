"""The torch CSV export round-trips: torch's own loader (_PipelineScheduleRuntime._load_csv) parses and
validates it and lowers it to send/recv; malformed CSV and non-fixed-placement plans are rejected."""
from __future__ import annotations

from unittest import mock

import pytest

from rpsim.errors import PlanError
from rpsim.export.torch_csv import to_torch_csv
from rpsim.ir import Action, Partition, Plan
from rpsim.schedules import get_schedule
from rpsim.schedules.base import BuildOptions

pytest.importorskip("torch")
from torch.distributed.pipelining import schedules as ts
from torch.distributed.pipelining.stage import PipelineStage

CASES = [("gpipe", 3, 4, 1), ("1f1b", 4, 6, 1), ("1f1b", 4, 2, 1), ("interleaved", 2, 4, 2),
         ("interleaved", 3, 6, 3), ("interleaved", 4, 9, 2), ("looped-bfs", 3, 5, 2), ("looped-bfs", 1, 3, 3)]


def _plan(name: str, n_gpus: int, n_mb: int, v: int, n_iters: int = 1) -> Plan:
    n_stages = n_gpus * (v if name in ("interleaved", "looped-bfs") else 1)
    partition = Partition.same(tuple((s, s + 1) for s in range(n_stages)))
    return get_schedule(name).build(n_gpus, partition, n_mb, BuildOptions(virtual_stages=v, n_iters=n_iters))


def _torch_load(text: str, n_gpus: int, n_stages: int, n_mb: int, tmp_path) -> ts._PipelineScheduleRuntime:
    """Load CSV text the way a torch user would: a runtime over this rank's stages, then _load_csv, which
    parses every action, runs _validate_schedule and lowers the order with _add_send_recv."""
    stage = mock.create_autospec(PipelineStage, instance=True)
    stage.group_rank, stage.group_size, stage.num_stages, stage.submod = 0, n_gpus, n_stages, None
    runtime = ts._PipelineScheduleRuntime([stage] * (n_stages // n_gpus), n_mb)
    path = tmp_path / "order.csv"
    path.write_text(text)
    runtime._load_csv(str(path))
    return runtime


def _as_torch(plan: Plan, gpu: int) -> list[ts._Action]:
    return [ts._Action(a.stage, ts._ComputationType(a.kind), a.mb) for a in plan.lane(gpu, "compute") if a.it == 0]


@pytest.mark.parametrize(("name", "n_gpus", "n_mb", "v"), CASES)
def test_torch_loads_validates_and_lowers_our_csv(name, n_gpus, n_mb, v, tmp_path):
    plan = _plan(name, n_gpus, n_mb, v)
    runtime = _torch_load(to_torch_csv(plan), n_gpus, len(plan.partition.bwd), n_mb, tmp_path)
    assert runtime.pipeline_order == {g: _as_torch(plan, g) for g in range(n_gpus)}
    assert runtime.stage_index_to_group_rank == {s: s % n_gpus for s in range(len(plan.partition.bwd))}
    sends = [a for row in runtime.pipeline_order_with_comms.values() for a in row
             if a.computation_type == ts._ComputationType.SEND_F]
    assert len(sends) == (len(plan.partition.bwd) - 1) * n_mb if n_gpus > 1 else not sends


def test_csv_text_is_one_row_per_rank_in_torch_grammar():
    text = to_torch_csv(_plan("1f1b", 2, 3, 1))
    assert text == "0F0,0F1,0B0,0F2,0B1,0B2\n1F0,1B0,1F1,1B1,1F2,1B2\n"


def test_a_multi_iteration_plan_exports_its_one_flushed_step():
    assert to_torch_csv(_plan("interleaved", 2, 4, 2, n_iters=3)) == to_torch_csv(_plan("interleaved", 2, 4, 2))


@pytest.mark.parametrize(("mangle", "error", "match"), [
    (lambda rows: [rows[0].replace("0F0,0F1,0B0", "0B0,0F1,0F0"), rows[1]], AssertionError,
     "without first running Forward"),
    (lambda rows: [rows[0].replace("0F1", "0X1"), rows[1]], RuntimeError, "Invalid"),
    (lambda rows: [rows[0] + ",1F0", rows[1]], AssertionError, "assigned to both rank"),
    (lambda rows: [rows[0]], AssertionError, "incorrect number of ranks"),
    (lambda rows: [rows[0].replace(",0B2", ""), rows[1]], AssertionError, "total backwards"),
])
def test_torch_rejects_malformed_csv(mangle, error, match, tmp_path):
    """The round-trip test above is only honest if torch's loader can fail: show that it does."""
    rows = to_torch_csv(_plan("1f1b", 2, 3, 1)).splitlines()
    with pytest.raises(error, match=match):
        _torch_load("\n".join(mangle(rows)) + "\n", 2, 2, 3, tmp_path)


def _handmade(lanes: dict[int, list[str]], partition: Partition, n_iters: int = 1) -> Plan:
    from rpsim.ir import parse_action
    return Plan(schedule="handmade", n_gpus=len(lanes), n_mb=2, partition=partition, n_iters=n_iters,
                lanes={(g, "compute"): tuple(parse_action(t) for t in texts) for g, texts in lanes.items()})


TWO = Partition.same(((0, 1), (1, 2)))


def test_a_stage_on_two_gpus_is_refused_with_its_gpus():
    plan = _handmade({0: ["0F0", "1F1", "1B1", "0B0"], 1: ["1F0", "0F1", "1B0", "0B1"]}, TWO)
    with pytest.raises(PlanError, match=r"torch binds each stage to one rank; this plan runs forward stage 0 "
                                        r"on GPUs \[0, 1\]"):
        to_torch_csv(plan)


def test_forward_and_backward_of_a_stage_on_different_gpus_is_refused():
    plan = _handmade({0: ["0F0", "0F1", "1B0", "1B1"], 1: ["1F0", "1F1", "0B0", "0B1"]}, TWO)
    with pytest.raises(PlanError, match=r"stage 0's forward and backward on different GPUs \(\[0, 1\]\)"):
        to_torch_csv(plan)


def test_roundpipe_style_asymmetric_fused_plan_is_refused():
    fused = Partition(fwd=((0, 2),), bwd=((0, 2), (2, 3)), fused=True)
    plan = _handmade({0: ["0F0", "0F1", "0B0", "0B1"], 1: ["1FB0", "1FB1"]}, fused)
    with pytest.raises(PlanError, match="torch pipelining has no 'FB' action"):
        to_torch_csv(plan)
    asymmetric = Partition(fwd=((0, 1), (1, 3)), bwd=((0, 2), (2, 3)))
    plan = _handmade({0: ["0F0", "0F1", "0B0", "0B1"], 1: ["1F0", "1F1", "1B0", "1B1"]}, asymmetric)
    with pytest.raises(PlanError, match="partitions differ"):
        to_torch_csv(plan)


def test_overlapping_iterations_are_refused():
    plan = _handmade({0: ["0F0", "0F1", "0F0.i1", "0B0", "0B1", "0F1.i1", "0B0.i1", "0B1.i1"],
                      1: ["1F0", "1B0", "1F1", "1B1", "1F0.i1", "1B0.i1", "1F1.i1", "1B1.i1"]}, TWO, n_iters=2)
    with pytest.raises(PlanError, match="GPU 0's 2 iterations are not iteration 0's order repeated"):
        to_torch_csv(plan)
    assert Action("F", 0, 0, 1) in plan.lane(0, "compute")
