"""torch schedule CSVs both ways for every split-backward schedule: torch's loader accepts what we
write (I / W, V-shaped placement, OVERLAP_F_B pairs), we read it back exactly, and `rpsim simulate
--torch-csv` on an exported or hand-written CSV reproduces the native plan's iteration time."""
from __future__ import annotations

import json

import pytest

from rpsim.cli.main import main
from rpsim.errors import SpecError
from rpsim.export.torch_csv import parse_torch_csv, to_torch_csv
from rpsim.ir import Partition
from rpsim.schedules import SCHEDULES, get_schedule
from rpsim.schedules.base import BuildOptions
from tests.test_torch_csv import _torch_load

SPLIT = [name for name, m in SCHEDULES.items() if m.TRAITS.split_backward]


def _plan(name: str, n_gpus: int, n_mb: int):
    v = SCHEDULES[name].TRAITS.virtual_stages.resolve(2, 1)
    partition = Partition.same(tuple((s, s + 1) for s in range(n_gpus * v)))
    return get_schedule(name).build(n_gpus, partition, n_mb, BuildOptions(virtual_stages=v))


@pytest.mark.parametrize("name", SPLIT)
@pytest.mark.parametrize("n_gpus, n_mb", [(2, 4), (3, 6)])
def test_torch_loads_our_csv_and_we_read_it_back(name, n_gpus, n_mb, tmp_path):
    plan = _plan(name, n_gpus, n_mb)
    text = to_torch_csv(plan)
    n_stages = len(plan.partition.bwd)
    runtime = _torch_load(text, n_gpus, n_stages, n_mb, tmp_path)  # parses, validates, adds send / recv
    gpu_of = SCHEDULES[name].TRAITS.placement.gpu_of
    assert runtime.stage_index_to_group_rank == {s: gpu_of(s, n_gpus, n_stages) for s in range(n_stages)}
    order = parse_torch_csv(text)
    assert order.per_gpu == tuple(plan.lane(g, "compute") for g in range(n_gpus))
    assert [list(p) for p in order.overlapped] == plan.options.get("overlapped", [])


def _iteration_s(args: list[str], capsys) -> float:
    assert main(args + ["--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)[0]["iteration_s"]


SETUP = ["--model", "qwen3-1.7b", "--gpus", "4090x2", "--seq", "512", "--n-mb", "4", "--global-batch", "8"]


@pytest.mark.parametrize("name", SPLIT)
def test_simulate_torch_csv_reproduces_the_native_iteration_time(name, tmp_path, capsys):
    csv = tmp_path / "order.csv"
    assert main(["export", *SETUP, "--schedule", name, "-o", str(tmp_path / "p.json"), "--torch-csv", str(csv)]) == 0
    capsys.readouterr()
    native = _iteration_s(["simulate", *SETUP, "--schedule", name], capsys)
    assert _iteration_s(["simulate", *SETUP, "--torch-csv", str(csv)], capsys) == native


def test_a_hand_written_csv_simulates_like_the_schedule_it_spells(tmp_path, capsys):
    """1F1B on 2 ranks with 4 microbatches, typed by hand in torch's grammar (blank cells are idle steps)."""
    csv = tmp_path / "hand.csv"
    csv.write_text("0F0,0F1,0B0,0F2,0B1,0F3,0B2,0B3\n,1F0,1B0,1F1,1B1,1F2,1B2,1F3,1B3\n")
    native = _iteration_s(["simulate", *SETUP, "--schedule", "1f1b"], capsys)
    assert _iteration_s(["simulate", *SETUP, "--torch-csv", str(csv)], capsys) == native


@pytest.mark.parametrize("text, match", [
    ("0F0,0X1\n1F0\n", r"row 1, column 2: '0X1' is not a torch compute action"),
    ("(0F0;1F0)OVERLAP_F_B\n", r"row 1, column 1: .*expected \(\{stage\}F\{mb\};\{stage\}B\{mb\}\)OVERLAP_F_B"),
    ("\n\n", "no actions"),
])
def test_malformed_csv_is_a_spec_error_naming_row_and_column(text, match):
    with pytest.raises(SpecError, match=match):
        parse_torch_csv(text)


def test_simulate_torch_csv_user_errors_exit_2(tmp_path, capsys):
    csv = tmp_path / "o.csv"
    csv.write_text("0F0,0B0\n1F0,1B0\n")  # one microbatch, the setup has 4
    assert main(["simulate", *SETUP, "--torch-csv", str(csv)]) == 2
    assert "the order runs 1 microbatches; the training setup has n_mb = 4" in capsys.readouterr().err
    assert main(["simulate", *SETUP, "--torch-csv", str(tmp_path / "missing.csv")]) == 2
    assert "--torch-csv" in capsys.readouterr().err
