"""Our fixed-placement builders reproduce torch.distributed.pipelining's per-rank compute order (F, B, I, W),
and the tests document where torch's generated order is itself wrong or narrower than its semantics."""
from __future__ import annotations

from functools import cache
from unittest import mock

import pytest

from rpsim.errors import SpecError
from rpsim.ir import Partition
from rpsim.schedules import get_schedule
from rpsim.schedules.base import BuildOptions
from rpsim.schedules.interleaved import group_sizes

pytest.importorskip("torch")
from torch.distributed.pipelining import schedules as ts
from torch.distributed.pipelining.stage import PipelineStage

RANKS = range(1, 6)
MICROBATCHES = range(1, 13)
VIRTUAL = range(1, 4)


def _ours(name: str, n_gpus: int, n_mb: int, v: int = 1) -> list[list[ts._Action]]:
    """Our plan's per-GPU compute order, mapped action by action onto torch's _Action."""
    partition = Partition.same(tuple((s, s + 1) for s in range(n_gpus * v)))
    plan = get_schedule(name).build(n_gpus, partition, n_mb, BuildOptions(virtual_stages=v))
    return [[ts._Action(a.stage, ts._ComputationType(a.kind), a.mb) for a in plan.lane(g, "compute")]
            for g in range(n_gpus)]


@cache
def _autospec_stage(n_gpus: int, rank: int) -> mock.NonCallableMagicMock:
    # create_autospec is the slow part of these tests; schedules only read attributes, so one per (N, rank).
    stage = mock.create_autospec(PipelineStage, instance=True)
    stage.group_rank, stage.group_size, stage.submod = rank, n_gpus, None
    return stage


def _mock_stages(n_gpus: int, v: int) -> list:
    # As torch's own _schedule_visualizer.get_schedule_ops does, minus its V >= 2 guard for multi-stage classes.
    stage = _autospec_stage(n_gpus, 0)
    stage.num_stages = n_gpus * v
    return [stage] * v


def _compute_only(order: dict[int, list]) -> list[list[ts._Action]]:
    keep = (ts._ComputationType.FORWARD, ts._ComputationType.FULL_BACKWARD, ts._ComputationType.BACKWARD_INPUT,
            ts._ComputationType.BACKWARD_WEIGHT)
    return [[a for a in order[r] if a is not None and a.computation_type in keep] for r in sorted(order)]


def _torch_generated(cls: type, n_gpus: int, n_mb: int, v: int = 1) -> list[list[ts._Action]]:
    stages = _mock_stages(n_gpus, v)
    schedule = cls(stages if issubclass(cls, ts.PipelineScheduleMulti) else stages[0], n_mb)
    return _compute_only(schedule.pipeline_order)


def _torch_runtime(cls: type, n_gpus: int, n_mb: int, rank: int) -> list[ts._Action]:
    """What a single-stage schedule's _step_microbatches really executes on `rank`, recorded from the calls
    it makes on a mock stage (P2P ops are empty lists, so nothing is sent)."""
    stage = _autospec_stage(n_gpus, rank)
    stage.reset_mock()
    stage.num_stages, stage.stage_index, stage.is_last = n_gpus, rank, rank == n_gpus - 1
    for name in ("get_fwd_recv_ops", "get_fwd_send_ops", "get_bwd_recv_ops", "get_bwd_send_ops"):
        getattr(stage, name).return_value = []
    schedule = cls.__new__(cls)
    # Skips only Schedule1F1B's `M >= N` constructor check; the runtime loop itself handles M < N.
    ts.PipelineScheduleSingle.__init__(schedule, stage, n_mb)
    schedule._initialize_stage = lambda *args, **kwargs: None
    schedule._step_microbatches()
    kinds = {"forward_one_chunk": ts._ComputationType.FORWARD,
             "backward_one_chunk": ts._ComputationType.FULL_BACKWARD}
    return [ts._Action(rank, kinds[c[0]], c[1][0]) for c in stage.method_calls if c[0] in kinds]


@pytest.mark.parametrize("n_gpus", RANKS)
def test_gpipe_matches_torch_generated_and_runtime_order(n_gpus):
    for n_mb in MICROBATCHES:
        ours = _ours("gpipe", n_gpus, n_mb)
        assert ours == _torch_generated(ts.ScheduleGPipe, n_gpus, n_mb)
        assert ours == [_torch_runtime(ts.ScheduleGPipe, n_gpus, n_mb, r) for r in range(n_gpus)]


@pytest.mark.parametrize("n_gpus", RANKS)
def test_1f1b_matches_torch_runtime_order_including_m_below_n(n_gpus):
    """The documented semantics (warm-up min(M, N - rank), 1B1F, drain) as Schedule1F1B executes them.
    torch's constructor refuses M < N; its runtime loop is well defined there, so we support it."""
    for n_mb in MICROBATCHES:
        ours = _ours("1f1b", n_gpus, n_mb)
        assert ours == [_torch_runtime(ts.Schedule1F1B, n_gpus, n_mb, r) for r in range(n_gpus)]


@pytest.mark.parametrize("n_gpus", range(2, 6))
def test_1f1b_matches_torch_generated_order_on_all_but_the_last_rank(n_gpus):
    for n_mb in range(n_gpus, 13):
        ours, theirs = _ours("1f1b", n_gpus, n_mb), _torch_generated(ts.Schedule1F1B, n_gpus, n_mb)
        assert ours[:-1] == theirs[:-1]


@pytest.mark.parametrize("n_gpus", RANKS)
def test_torch_1f1b_generated_order_is_wrong_on_the_last_rank(n_gpus):
    """torch 2.13 Schedule1F1B._get_pipeline_order: the last rank has no warm-up forwards, so its
    `forward_mb` counter stays 0 and the first steady-state `forward_mb += 1` yields microbatch 1. The
    last rank runs forwards 1..M (M does not exist) and never microbatch 0; torch's own _validate_schedule
    rejects the order. Its runtime (_step_microbatches) is right: forwards 0..M-1, which we follow.
    If this test fails, torch fixed the defect: compare all ranks with the generated order again."""
    for n_mb in range(n_gpus, 13):
        last = _torch_generated(ts.Schedule1F1B, n_gpus, n_mb)[-1]
        forwards = [a.microbatch_index for a in last if a.computation_type == ts._ComputationType.FORWARD]
        assert forwards == list(range(1, n_mb + 1))
        assert _ours("1f1b", n_gpus, n_mb)[-1] == _torch_runtime(ts.Schedule1F1B, n_gpus, n_mb, n_gpus - 1)
        order = {r: list(row) for r, row in enumerate(_torch_generated(ts.Schedule1F1B, n_gpus, n_mb))}
        with pytest.raises(AssertionError, match=f"stage {n_gpus - 1}, microbatch 0 without first running"):
            ts._validate_schedule(order, n_gpus, n_gpus, n_mb)


def _torch_accepts_interleaved(n_gpus: int, n_mb: int) -> bool:
    return n_mb % max(1, n_mb // n_gpus) == 0


@pytest.mark.parametrize("n_gpus", RANKS)
@pytest.mark.parametrize("v", VIRTUAL)
def test_interleaved_matches_torch_generated_order(n_gpus, v):
    checked = 0
    for n_mb in MICROBATCHES:
        if not _torch_accepts_interleaved(n_gpus, n_mb):
            with pytest.raises(ValueError, match="multiple of the number of rounds"):
                ts.ScheduleInterleaved1F1B(_mock_stages(n_gpus, v), n_mb)
            continue
        assert _ours("interleaved", n_gpus, n_mb, v) == _torch_generated(ts.ScheduleInterleaved1F1B,
                                                                         n_gpus, n_mb, v)
        checked += 1
    assert checked >= 8


def test_interleaved_supports_microbatch_counts_torch_refuses():
    """torch needs M divisible by its rounds max(1, M // N) only because it uses one group size; we split
    M into as-even groups (larger first). N=4, M=9: torch refuses, we use groups [5, 4]."""
    with pytest.raises(ValueError):
        ts.ScheduleInterleaved1F1B(_mock_stages(4, 2), 9)
    assert group_sizes(4, 9) == [5, 4]
    assert [len(row) for row in _ours("interleaved", 4, 9, 2)] == [2 * 2 * 9] * 4


@pytest.mark.parametrize("n_gpus", RANKS)
@pytest.mark.parametrize("v", VIRTUAL)
def test_looped_bfs_matches_torch_generated_order(n_gpus, v):
    for n_mb in MICROBATCHES:
        assert _ours("looped-bfs", n_gpus, n_mb, v) == _torch_generated(ts.ScheduleLoopedBFS, n_gpus, n_mb, v)


def _torch_accepts_zero_bubble(n_gpus: int, n_mb: int) -> bool:
    return n_mb % max(1, n_mb // n_gpus) == 0


@pytest.mark.parametrize("n_gpus", RANKS)
@pytest.mark.parametrize("v", VIRTUAL)
def test_zero_bubble_matches_torch_interleaved_zero_bubble(n_gpus, v):
    """ZB-H1 is torch's ScheduleInterleavedZeroBubble (ZB1P) with one stage per rank; zb-interleaved the
    same with V stages. Where torch refuses M (not a multiple of its rounds) we split the microbatches
    into as-even groups, as for interleaved 1F1B; the property tests cover those orders."""
    name = "zb-h1" if v == 1 else "zb-interleaved"
    checked = 0
    for n_mb in MICROBATCHES:
        if not _torch_accepts_zero_bubble(n_gpus, n_mb):
            continue
        assert _ours(name, n_gpus, n_mb, v) == _torch_generated(ts.ScheduleInterleavedZeroBubble, n_gpus, n_mb, v)
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("n_gpus", RANKS)
def test_zbv_matches_torch_generated_order(n_gpus):
    for n_mb in MICROBATCHES:
        assert _ours("zbv", n_gpus, n_mb, 2) == _torch_generated(ts.ScheduleZBVZeroBubble, n_gpus, n_mb, 2)


def _torch_dualpipev(n_gpus: int, n_mb: int) -> tuple[list[list[ts._Action]], list[list[tuple]]]:
    """torch's ScheduleDualPipeV order with each OVERLAP_F_B flattened into its (F, B), and the pairs."""
    schedule = ts.ScheduleDualPipeV(_mock_stages(n_gpus, 2), n_mb)
    order, pairs = [], []
    for r in sorted(schedule.pipeline_order):
        row, row_pairs = [], []
        for a in schedule.pipeline_order[r]:
            if a is not None and a.computation_type == ts._ComputationType.OVERLAP_F_B:
                row += list(a.sub_actions)
                row_pairs.append(tuple(a.sub_actions))
            elif a is not None and a.computation_type in ts._ComputationType.__members__.values():
                row.append(a)
        order.append([a for a in row if a.is_compute_op])
        pairs.append(row_pairs)
    return order, pairs


@pytest.mark.parametrize("n_gpus", RANKS)
def test_dualpipev_matches_torch_generated_order_and_overlapped_pairs(n_gpus):
    for n_mb in range(2 * n_gpus, 2 * n_gpus + 8):
        theirs, their_pairs = _torch_dualpipev(n_gpus, n_mb)
        assert _ours("dualpipev", n_gpus, n_mb, 2) == theirs
        partition = Partition.same(tuple((s, s + 1) for s in range(2 * n_gpus)))
        plan = get_schedule("dualpipev").build(n_gpus, partition, n_mb, BuildOptions(virtual_stages=2))
        ours = [[] for _ in range(n_gpus)]
        for g, f, b in plan.options["overlapped"]:
            lane = [str(a) for a in plan.lane(g, "compute")]
            assert lane.index(b) == lane.index(f) + 1  # a pair is adjacent on its GPU's compute lane
            ours[g].append((f, b))
        assert ours == [[(str(f), str(b)) for f, b in row] for row in their_pairs]


def test_dualpipev_refuses_fewer_microbatches_than_stages_as_torch_does():
    with pytest.raises(ValueError, match="at least as many microbatches as stages"):
        ts.ScheduleDualPipeV(_mock_stages(3, 2), 5)
    with pytest.raises(SpecError, match="n_mb must be >= 2 \\* n_gpus = 6"):
        _ours("dualpipev", 3, 5, 2)
