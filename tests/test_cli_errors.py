"""Issue 16, "Bad input and faults": each case of the issue, through `main([...])` of rpsim and rpexec.
Every case exits 2 (bad input) or 1 (does not fit) with a message naming the flag or key and the value,
without a traceback, and leaves no file behind. Cases:

  outputs      -o/--plot/--trace/--export/--chrome-trace/--torch-csv at a folder, a missing parent, /proc,
               a read-only place: refused before any work, no folder created       test_bad_output_*
  hf types     "hidden_size": "32" and other wrong types in a config.json          test_hf_config_wrong_type
  topology     negative or zero numbers in a topology TOML                         test_topology_numbers
  counts       rpexec --iters -4/0, --virtual-stages 0, compare --iters 0, a partitioner the schedule does
               not declare                                                         test_counts_*, test_partitioner_*
  tracebacks   --plan DIR, rpexec run DIR, --cluster notaurl, --inject-fault foo, --lr nan, "start_s":
               "zero", bench_rpexec.py --device cuda without CUDA                  test_no_traceback_*
  runaway      --gpus 4090x1000 bounded with the hardware reason                   test_gpu_count_is_bounded
Plans and traces (validate, plot, STEP coverage, shipped plans), memory, signals and MFU: the modules
test_cli_errors_plans.py and test_cli_errors_runs.py.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
from pathlib import Path

import pytest

from rpexec.cli import main as rpexec_main
from rpsim.cli.main import main as rpsim_main
from tests.rpexec_helpers import TINY, write_config

ROOT = Path(__file__).resolve().parents[1]


def call(main, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model's config, a plan exported for it and the trace rpsim simulates for that plan."""
    d = tmp_path_factory.mktemp("inputs")
    config = write_config(d, TINY)
    plan = d / "plan.json"
    setup = ["--model", config, "--gpus", "4090x2", "--seq", "16", "--global-batch", "8", "--n-mb", "4"]
    assert call(rpsim_main, "export", *setup, "--schedule", "gpipe", "-o", plan)[0] == 0
    trace = d / "trace.json"
    assert call(rpsim_main, "simulate", "--plan", plan, "--trace", trace, "--format", "json")[0] == 0
    return {"config": config, "plan": plan, "trace": trace, "setup": setup, "dir": d}


# ---- outputs ----------------------------------------------------------------------------------------

def _commands(f: dict) -> dict[str, tuple]:
    """(main, argv before the output flag, flag) for every output flag of both CLIs."""
    s = f["setup"]
    return {
        "export -o": (rpsim_main, ["export", *s, "--schedule", "gpipe"], "-o"),
        "export --torch-csv": (rpsim_main, ["export", *s, "--schedule", "gpipe", "-o", f["dir"] / "unused.json"],
                               "--torch-csv"),
        "simulate --trace": (rpsim_main, ["simulate", "--plan", f["plan"]], "--trace"),
        "simulate --chrome-trace": (rpsim_main, ["simulate", "--plan", f["plan"]], "--chrome-trace"),
        "plot -o": (rpsim_main, ["plot", "--trace", f["trace"]], "-o"),
        "plot --chrome-trace": (rpsim_main, ["plot", "--trace", f["trace"]], "--chrome-trace"),
        "compare --plot": (rpsim_main, ["compare", *s], "--plot"),
        "search --export": (rpsim_main, ["search", *s, "--jobs", "1"], "--export"),
        "rpexec run --trace": (rpexec_main, ["run", f["plan"]], "--trace"),
        "rpexec profile -o": (rpexec_main, ["profile", "--model", f["config"], "--seq", "16"], "-o"),
    }


COMMANDS = ["export -o", "export --torch-csv", "simulate --trace", "simulate --chrome-trace", "plot -o",
            "plot --chrome-trace", "compare --plot", "search --export", "rpexec run --trace", "rpexec profile -o"]


def _suffix(command: str) -> str:
    return ".png" if command in ("plot -o", "compare --plot") else (".csv" if "csv" in command else ".json")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("place", ["folder", "missing parent", "/proc", "read-only /sys"])
def test_bad_output_refused_before_work(files, tmp_path, command, place):
    main, argv, flag = _commands(files)[command]
    target = {"folder": tmp_path,
              "missing parent": tmp_path / "no" / "such" / f"out{_suffix(command)}",
              "/proc": Path("/proc") / f"out{_suffix(command)}",
              "read-only /sys": Path("/sys") / f"out{_suffix(command)}"}[place]
    code, _, err = call(main, *argv, flag, target)
    assert code == 2
    assert flag in err and str(target) in err
    assert "simulating" not in err and "running" not in err and "evaluated" not in err  # refused first
    assert not (tmp_path / "no").exists()  # a missing folder is not created
    assert not (place == "/proc" and target.exists())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_bad_output_read_only_folder(files, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code, _, err = call(rpsim_main, "simulate", "--plan", files["plan"], "--trace", ro / "t.json")
    assert code == 2 and "--trace" in err and list(ro.iterdir()) == []


def test_two_outputs_naming_one_file(files, tmp_path):
    out = tmp_path / "same.json"
    code, _, err = call(rpsim_main, "simulate", "--plan", files["plan"], "--trace", out, "--chrome-trace", out)
    assert code == 2 and "same file" in err and not out.exists()


def test_good_output_in_an_existing_folder_is_written(files, tmp_path):
    out = tmp_path / "t.json"
    assert call(rpsim_main, "simulate", "--plan", files["plan"], "--trace", out)[0] == 0
    assert json.loads(out.read_text())["events"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # no probe or temp file left


# ---- HF config types, topology numbers ------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("hidden_size", "32"), ("num_attention_heads", 4.0),
                                        ("num_hidden_layers", True), ("vocab_size", [64]),
                                        ("intermediate_size", -64), ("tie_word_embeddings", "no"),
                                        ("num_key_value_heads", {"a": 1})])
def test_hf_config_wrong_type(tmp_path, key, value):
    config = write_config(tmp_path, {**TINY, key: value})
    code, _, err = call(rpsim_main, "costs", "--model", config, "--gpus", "4090x2")
    assert code == 2 and key in err and repr(value) in err


TOPOLOGY = """gpu = "rtx4090"
[host]
cores = 8
dram_gib = 256
adam_params_per_s = 2e9
[[sockets]]
name = "s0"
dram_bandwidth_gb_per_s = 80
root_complex_gb_per_s = 100
[[gpus]]
count = 2
attach = "s0"
h2d_efficiency = 0.8
d2h_efficiency = 0.8
"""


@pytest.mark.parametrize("line, key, shown", [
    ("dram_gib = 256", "dram_gib", "-256"), ("adam_params_per_s = 2e9", "adam_params_per_s", "-2000000000.0"),
    ("root_complex_gb_per_s = 100", "root_complex_gb_per_s", "0"), ("count = 2", "count", "0"),
    ("cores = 8", "cores", "'8'"), ("h2d_efficiency = 0.8", "h2d_efficiency", "1.5"),
    ("dram_bandwidth_gb_per_s = 80", "dram_bandwidth_gb_per_s", "nan"),
])
def test_topology_numbers(tmp_path, line, key, shown):
    value = {"'8'": '"8"', "-2000000000.0": "-2e9"}.get(shown, shown)
    path = tmp_path / "box.toml"
    path.write_text(TOPOLOGY.replace(line, f"{key} = {value}"))
    code, _, err = call(rpsim_main, "costs", "--model", "qwen3-1.7b", "--gpus", path)
    assert code == 2 and key in err and shown in err


def test_topology_that_is_right_loads(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(TOPOLOGY)
    assert call(rpsim_main, "costs", "--model", "qwen3-1.7b", "--gpus", path)[0] == 0


# ---- counts are refused, not replaced ---------------------------------------------------------------

@pytest.mark.parametrize("iters", ["-4", "0"])
def test_counts_rpexec_iters(files, iters):
    code, _, err = call(rpexec_main, "run", files["plan"], "--iters", iters)
    assert code == 2 and f"--iters {iters}" in err and "loss" not in err


@pytest.mark.parametrize("flag, value, schedules, needle", [
    ("--virtual-stages", "0", "interleaved", "--virtual-stages 0: must be >= 1"),
    ("--iters", "0", "gpipe", "--iters 0: must be >= 1"),
    ("--round-size", "0", "roundpipe", "--round-size 0: must be >= 1"),
    ("--virtual-stages", "2", "gpipe,1f1b", "--virtual-stages applies only to interleaved, looped-bfs")])
def test_counts_rpsim(files, flag, value, schedules, needle):
    code, _, err = call(rpsim_main, "compare", *files["setup"], "--schedules", schedules, flag, value)
    assert code == 2 and needle in err and "simulating" not in err


@pytest.mark.parametrize("schedule, partitioner", [("gpipe", "roundpipe-paper"), ("1f1b", "roundpipe-library"),
                                                   ("roundpipe", "uneven"), ("roundpipe-sync", "balanced")])
def test_partitioner_the_schedule_does_not_declare(files, schedule, partitioner):
    code, _, err = call(rpsim_main, "compare", *files["setup"], "--schedules", schedule, "--partitioner", partitioner)
    assert code == 2 and partitioner in err and schedule in err and "valid choices" in err


def test_partitioner_applies_to_the_schedules_that_declare_it(files):
    code, out, _ = call(rpsim_main, "compare", *files["setup"], "--schedules", "gpipe,roundpipe",
                        "--partitioner", "even", "--format", "json")
    assert code == 0 and {r["schedule"] for r in json.loads(out)} == {"gpipe", "roundpipe"}


def test_every_declared_partitioner_builds():
    """The partitioners a builder declares are the ones the planner accepts for it, and each builds."""
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.scenario import make_scenario
    from rpsim.schedules import SCHEDULES
    from rpsim.specs import TrainingSpec
    sc = make_scenario("qwen3-1.7b", "4090x2", TrainingSpec(global_batch=4, mb_size=1))
    for name, module in SCHEDULES.items():
        assert module.TRAITS.partitioners, name
        for partitioner in module.TRAITS.partitioners:
            plan = make_plan(sc, PlanRequest(name, fidelity="ideal", partitioner=partitioner))
            assert plan.schedule == name


# ---- tracebacks that were --------------------------------------------------------------------------

def test_no_traceback_plan_is_a_folder(files, tmp_path):
    for main, argv in [(rpsim_main, ["simulate", "--plan", tmp_path]),
                       (rpsim_main, ["validate", "--plan", tmp_path, "--measured", files["trace"]]),
                       (rpsim_main, ["plot", "--plan", tmp_path, "-o", tmp_path / "x.png"]),
                       (rpexec_main, ["run", tmp_path])]:
        code, _, err = call(main, *argv)
        assert code == 2 and "is a folder" in err and str(tmp_path) in err


def test_no_traceback_cluster_not_an_address(files):
    code, _, err = call(rpsim_main, "search", *files["setup"], "--cluster", "notaurl")
    assert code == 2 and "--cluster 'notaurl'" in err and "HOST:PORT" in err


@pytest.mark.parametrize("fault, needle", [("foo", "GPU:LANE:ACTION:MODE"), ("0:compute:0F0:explode", "raise, hang, oom"),
                                           ("0:compute:9F9:raise", "no action '9F9'")])
def test_no_traceback_inject_fault(files, fault, needle):
    code, _, err = call(rpexec_main, "run", files["plan"], "--inject-fault", fault)
    assert code == 2 and "--inject-fault" in err and needle in err


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"), ("--watchdog-s", "0")])
def test_no_traceback_rpexec_numbers(files, flag, value):
    code, _, err = call(rpexec_main, "run", files["plan"], flag, value)
    assert code == 2 and f"{flag} {value}" in err


def test_no_traceback_start_s_zero(files, tmp_path):
    data = json.loads(files["trace"].read_text())
    data["events"][0]["start_s"] = "zero"
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps(data))
    code, _, err = call(rpsim_main, "plot", "--trace", bad, "-o", tmp_path / "x.png")
    assert code == 2 and "start_s" in err and "'zero'" in err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("profile_flag", [["--seq", "0"], ["--mb-size", "-1"], ["--reps", "0"]])
def test_no_traceback_rpexec_profile_counts(files, tmp_path, profile_flag):
    code, _, err = call(rpexec_main, "profile", "--model", files["config"], *profile_flag, "-o", tmp_path / "p.json")
    assert code == 2 and profile_flag[0] in err and not (tmp_path / "p.json").exists()


def test_no_traceback_bench_rpexec_cuda_without_cuda(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = importlib.util.spec_from_file_location("bench_rpexec", ROOT / "benchmarks" / "bench_rpexec.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--device", "cuda"]) == 2
    assert "--device cuda" in capsys.readouterr().err


# ---- runaways --------------------------------------------------------------------------------------

def test_gpu_count_is_bounded(tmp_path):
    code, _, err = call(rpsim_main, "compare", "--model", "qwen3-1.7b", "--gpus", "4090x1000")
    assert code == 2 and "4090x1000" in err and "one server" in err and "PCIe lanes" in err
    path = tmp_path / "big.toml"
    path.write_text(TOPOLOGY.replace("count = 2", "count = 65"))
    code, _, err = call(rpsim_main, "costs", "--model", "qwen3-1.7b", "--gpus", path)
    assert code == 2 and "65 GPUs" in err
    assert call(rpsim_main, "costs", "--model", "qwen3-1.7b", "--gpus", "4090x64")[0] == 0
