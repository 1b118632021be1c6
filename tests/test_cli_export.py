"""`rpsim export` acceptance (issue 3): the plan file it writes loads back and validates; --torch-csv writes
a CSV torch's own loader accepts; RoundPipe with --torch-csv is refused with exit 2 and writes nothing."""
from __future__ import annotations

import json
from unittest import mock

import pytest

from rpsim.ir import CPU
from rpsim.ir.planio import load_plan
from rpsim.ir.validate import check_plan
from rpsim.ir.weight_deps import grad_fence_of


def test_roundpipe_qwen3_32b_on_eight_4090s_exports_a_valid_plan(run_cli, tmp_path):
    out = tmp_path / "p.json"
    code, stdout, err = run_cli("export", "--model", "qwen3-32b", "--gpus", "4090x8", "--schedule", "roundpipe",
                                "-o", str(out))
    assert code == 0, err
    assert f"wrote {out}" in err and stdout == ""
    plan = load_plan(out)  # parses and runs every plan check
    check_plan(plan)
    assert json.loads(out.read_text())["format"] == "rpsim.plan"
    assert (plan.schedule, plan.n_gpus, plan.level, plan.optimizer) == ("roundpipe", 8, "pcie", "async")
    assert plan.n_iters >= 4 and plan.n_mb == 16  # default global batch 64 / mb size 4; async: warm-up, steady, drain
    assert plan.partition.fused and plan.partition.n_layers == 64 + 2
    assert plan.lane(CPU, "optimizer")  # streamed weights and a CPU optimizer
    assert plan.setup["server"] == "4090x8" and plan.setup["model"]["n_layers"] == 64


@pytest.mark.parametrize("fence", [None, "offload", "backward"])
def test_export_writes_the_gradient_fence_its_plan_was_timed_with(run_cli, tmp_path, fence):
    """--grad-fence picks the dependency rule a download follows (rpsim.ir.deps); the plan file carries
    it, so rpexec replays the rule rpsim timed. The default, none, is written too: a file without the
    option means the download fence of plans written before it existed."""
    out = tmp_path / "p.json"
    flags = ["--grad-fence", fence] if fence else []
    code, _, err = run_cli("export", "--model", "qwen3-1.7b", "--gpus", "4090x4", "--schedule", "roundpipe",
                           "-o", str(out), *flags)
    assert code == 0, err
    written = json.loads(out.read_text())["options"].get("grad_fence")
    assert written == {None: "none", "offload": None, "backward": "backward"}[fence]
    assert grad_fence_of(load_plan(out).options) == (fence or "none")


def _torch_load(path, n_gpus: int, n_stages: int, n_mb: int):
    """As in test_torch_csv: torch's runtime for one rank loads the CSV, validates it and adds send/recv."""
    from torch.distributed.pipelining import schedules as ts
    from torch.distributed.pipelining.stage import PipelineStage
    stage = mock.create_autospec(PipelineStage, instance=True)
    stage.group_rank, stage.group_size, stage.num_stages, stage.submod = 0, n_gpus, n_stages, None
    runtime = ts._PipelineScheduleRuntime([stage] * (n_stages // n_gpus), n_mb)
    runtime._load_csv(str(path))
    return runtime


def test_1f1b_export_writes_a_csv_torch_loads(run_cli, tmp_path):
    pytest.importorskip("torch")
    plan_path, csv_path = tmp_path / "q.json", tmp_path / "o.csv"
    code, _, err = run_cli("export", "--model", "qwen3-1.7b", "--gpus", "4090x4", "--schedule", "1f1b",
                           "-o", str(plan_path), "--torch-csv", str(csv_path))
    assert code == 0, err
    plan = load_plan(plan_path)
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 4
    runtime = _torch_load(csv_path, 4, 4, plan.n_mb)
    for gpu in range(4):
        ours = [a for a in plan.lane(gpu, "compute") if a.is_compute]
        assert [str(a) for a in runtime.pipeline_order[gpu]] == [str(a) for a in ours]
    assert runtime.stage_index_to_group_rank == {s: s for s in range(4)}


def test_roundpipe_with_torch_csv_exits_2_and_writes_nothing(run_cli, tmp_path):
    plan_path, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
    code, stdout, err = run_cli("export", "--model", "qwen3-1.7b", "--gpus", "4090x4", "--schedule", "roundpipe",
                                "-o", str(plan_path), "--torch-csv", str(csv_path))
    assert code == 2
    # The reason: torch's CSV has no fused FB action (and binds each stage to one rank).
    assert err.startswith("rpsim: error: ") and "torch" in err and ("FB" in err or "fixed-placement" in err)
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert stdout == ""
    assert not plan_path.exists() and not csv_path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary files left behind either


def test_roundpipe_without_torch_csv_exports_the_same_model(run_cli, tmp_path):
    """The refusal above is about the CSV, not the plan: the same command without it succeeds."""
    plan_path = tmp_path / "r.json"
    code, _, err = run_cli("export", "--model", "qwen3-1.7b", "--gpus", "4090x4", "--schedule", "roundpipe",
                           "-o", str(plan_path))
    assert code == 0, err
    assert load_plan(plan_path).schedule == "roundpipe"
