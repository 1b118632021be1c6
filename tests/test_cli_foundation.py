"""`rpsim list` and `rpsim costs` through main([...]), including every user-error path (exit 2)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_costs_json_for_qwen3_235b(run_cli):
    code, out, _ = run_cli("costs", "--model", "qwen3-235b-a22b", "--gpus", "4090x8", "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert data["total_params"] == pytest.approx(235e9, rel=0.01)
    assert data["active_params"] == pytest.approx(22e9, rel=0.02)
    assert len(data["layers"]) == 96 and {"forward_flops", "forward_s", "weight_bytes"} <= set(data["layers"][1])


def test_costs_table_groups_identical_layers(run_cli):
    code, out, _ = run_cli("costs", "--model", "llama-70b", "--gpus", "4090x8")
    assert code == 0 and "layer.0..79 (x80)" in out and "total params      68.977 B" in out


@pytest.mark.parametrize("what", ["models", "gpus", "schedules"])
def test_list(run_cli, what):
    code, out, _ = run_cli("list", what, "--format", "json")
    assert code == 0 and len(json.loads(out)) >= 3


@pytest.mark.parametrize("argv, needle", [
    (["costs", "--model", "llama-71b", "--gpus", "4090x8"], "valid choices"),
    (["costs", "--model", "llama-70b", "--gpus", "4091x8"], "nearest match: '4090'"),
    (["costs", "--model", "llama-70b", "--gpus", "4090by8"], "<gpu>x<count>"),
    (["costs", "--model", "llama-70b", "--gpus", "4090x8", "--global-batch", "6", "--mb-size", "4"],
     "valid mb sizes: 1, 2, 3, 6"),
    (["costs", "--model", "llama-70b", "--gpus", "4090x8", "--precision", "fp8"], "invalid choice"),
])
def test_user_errors_exit_2_without_traceback(run_cli, argv, needle):
    code, _, err = run_cli(*argv)
    assert code == 2
    assert needle in err and "Traceback" not in err


def test_hf_config_missing_key_exit_2(run_cli, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"hidden_size": 64}))
    code, _, err = run_cli("costs", "--model", str(path), "--gpus", "4090x2")
    assert code == 2 and "num_attention_heads" in err


def test_topology_unknown_key_exit_2(run_cli, tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('gpu = "rtx4090"\nfoo = 1\n')
    code, _, err = run_cli("costs", "--model", "llama-7b", "--gpus", str(path))
    assert code == 2 and "unknown key 'foo'" in err


def test_rpsim_never_imports_torch():
    code = ("import sys, pkgutil, importlib, rpsim\n"
            "for m in pkgutil.walk_packages(rpsim.__path__, 'rpsim.'):\n"
            "    importlib.import_module(m.name) if not m.name.endswith('__main__') else None\n"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
