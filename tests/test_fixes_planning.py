"""Planning fixes: the RoundPipe partitioner's cost on wide servers, the optimizer mode of the two RoundPipe
builders, `rpsim simulate --plan` on a plan whose GPU count or schedule name does not match the catalog,
and `rpsim export --torch-csv` refusing round-robin schedules before building anything."""
from __future__ import annotations

import json

import pytest

from rpsim.cli import cmd_export
from rpsim.cli.main import main
from rpsim.partition import parse_partition_spec
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import make_scenario
from rpsim.schedules import SCHEDULES, get_schedule
from rpsim.schedules.base import BuildOptions
from rpsim.specs import TrainingSpec


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _export(capsys, tmp_path, schedule: str = "1f1b", gpus: str = "4090x2", *extra: str) -> dict:
    path = tmp_path / "p.json"
    code, _, err = _cli(capsys, "export", "--model", "qwen3-1.7b", "--gpus", gpus, "--schedule", schedule,
                        "-o", str(path), *extra)
    assert code == 0, err
    return json.loads(path.read_text())


def _write(tmp_path, data: dict) -> str:
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_paper_partitioner_fills_every_gpu_each_round():
    """With M·S in place of M·max(S, N), 7 stage slots on 8 GPUs scored better than 8 and left a GPU idle
    every round."""
    sc = make_scenario("qwen3-1.7b", "4090x8", TrainingSpec())
    p = make_plan(sc, PlanRequest("roundpipe")).partition
    assert len(p.fwd) + len(p.bwd) >= 8


def test_roundpipe_builders_fix_their_own_optimizer_mode():
    partition = parse_partition_spec("2,2|0,1,1,1,1", 4, roundpipe=True)
    plans = {name: get_schedule(name).build(3, partition, 4, BuildOptions())
             for name in ("roundpipe", "roundpipe-sync")}
    assert plans["roundpipe"].optimizer == "async"
    assert plans["roundpipe-sync"].optimizer == "sync"
    assert {n: p.schedule for n, p in plans.items()} == {"roundpipe": "roundpipe", "roundpipe-sync": "roundpipe-sync"}
    assert plans["roundpipe"].lanes == plans["roundpipe-sync"].lanes  # one dispatcher, two optimizer modes
    # Options cannot override the schedule's mode either way.
    assert get_schedule("roundpipe").build(3, partition, 4, BuildOptions(optimizer="sync")).optimizer == "async"
    assert get_schedule("roundpipe-sync").build(3, partition, 4, BuildOptions(optimizer="async")).optimizer == "sync"


def test_simulate_plan_refuses_a_server_with_another_gpu_count(capsys, tmp_path):
    data = _export(capsys, tmp_path)
    assert (data["n_gpus"], data["setup"]["server"]) == (2, "4090x2")
    data["setup"]["server"] = "4090x3"
    code, out, err = _cli(capsys, "simulate", "--plan", _write(tmp_path, data))
    assert code == 2
    assert err.startswith("rpsim: error: ") and "Traceback" not in err
    assert "$.n_gpus is 2" in err and "'4090x3' has 3 GPUs" in err
    assert out == ""


def test_simulate_plan_with_an_unknown_schedule_name_reports_it(capsys, tmp_path):
    """The lanes define the plan; its schedule name is a label, not a builder to look up. (A chunked loss
    keeps the plan within 24 GiB: rpexec's full-logit loss holds 12 B per logit, 14 GiB for 8192 tokens of
    Qwen3's 152k vocabulary, and an infeasible plan exits 1.)"""
    data = _export(capsys, tmp_path, "1f1b", "4090x2", "--loss-chunk-tokens", "1024")
    data["schedule"] = "hand-tuned-1f1b"
    code, out, err = _cli(capsys, "simulate", "--plan", _write(tmp_path, data))
    assert code == 0, err
    assert "hand-tuned-1f1b" in out and "rpsim: error" not in err
    assert "best:" not in out  # an unknown schedule is no baseline to compare against


@pytest.mark.parametrize("schedule", ["roundpipe", "roundpipe-sync"])
def test_torch_csv_refuses_round_robin_schedules_before_building(capsys, tmp_path, monkeypatch, schedule):
    def never(*_args, **_kwargs):
        raise AssertionError("built a plan that --torch-csv must refuse")
    monkeypatch.setattr(cmd_export, "plan_to_save", never)
    monkeypatch.setattr(cmd_export, "setup_from_args", never)
    plan_path, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
    code, out, err = _cli(capsys, "export", "--model", "qwen3-1.7b", "--gpus", "4090x4", "--schedule", schedule,
                          "-o", str(plan_path), "--torch-csv", str(csv_path))
    assert code == 2 and out == ""
    assert err.startswith("rpsim: error: ") and len(err.splitlines()) == 1
    assert "torch.distributed.pipelining binds each stage to one rank" in err and "round-robin" in err
    exportable = [n for n, m in SCHEDULES.items() if m.TRAITS.placement.fixed]
    assert exportable and all(n in err for n in exportable)
    assert not plan_path.exists() and not csv_path.exists()
