"""rpexec on CPU: every schedule matches the single-device reference; async weight versions; faults."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

from rpexec.checks import model_and_shape
from rpexec.cli import main as rpexec_main
from rpexec.session import RunOptions, run_plan
from rpsim.ir.planio import load_plan
from rpsim.schedules import SCHEDULES
from tests.rpexec_helpers import TINY, TINY_DEEPSEEK, TINY_MOE, export, write_config

# Every schedule by discovery; split-backward ones on 2 and 4 virtual devices, the rest on 2, 3 and 4.
CASES = [(name, n) for name, m in SCHEDULES.items() for n in ((2, 4) if m.TRAITS.split_backward else (2, 3, 4))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("cfg"), TINY)


@pytest.mark.parametrize("schedule, n_gpus", CASES)
def test_every_schedule_matches_reference(tmp_path, tiny, schedule, n_gpus, capsys):
    # export's 4 microbatches, or 2N = 8 on 4 GPUs for split-backward schedules (DualPipeV needs M >= 2N)
    extra = ("--n-mb", "8") if SCHEDULES[schedule].TRAITS.split_backward and n_gpus == 4 else ()
    plan = export(tmp_path, tiny, schedule, f"4090x{n_gpus}", *extra)
    code = rpexec_main(["run", str(plan), "--device", "cpu", "--check-grads"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "check-grads ok" in out


@pytest.mark.parametrize("schedule, extra", [
    ("1f1b", ("--recompute", "none")), ("gpipe", ("--recompute", "layer")),
    ("roundpipe", ("--recompute", "layer")), ("1f1b", ("--weights", "stream")),
    ("interleaved", ("--weights", "stream")), ("roundpipe-sync", ("--round-size", "4")),
    ("roundpipe", ("--partition", "3,3,2|0,1,1,1,1,1,1,1,1")),
    ("roundpipe", ("--loss-chunk-tokens", "5")), ("1f1b", ("--loss-chunk-tokens", "7", "--recompute", "none")),
    # split backward: I keeps the forward's whole-stage graph (none) or per-layer segments (layer), and W
    # writes streamed weights' gradients for their OFFLOADs
    ("zb-h1", ("--recompute", "none")), ("zbv", ("--recompute", "layer")), ("zb-h1", ("--weights", "stream")),
    ("roundpipe", ("--defer-w",)), ("roundpipe-sync", ("--defer-w", "--recompute", "layer")),
])
def test_variants_match_reference(tmp_path, tiny, schedule, extra, capsys):
    plan = export(tmp_path, tiny, schedule, "4090x2", *extra)
    assert rpexec_main(["run", str(plan), "--check-grads"]) == 0, capsys.readouterr()


def test_p2p_plan_uses_send_recv_and_matches(tmp_path, tiny, capsys):
    plan = export(tmp_path, tiny, "1f1b", "h100x2")
    kinds = {a.split(".")[0].strip("0123456789") for lane in json.loads(plan.read_text())["lanes"]
             for a in lane["actions"]}
    assert {"SEND", "RECV"} <= kinds and "ACT_OUT" not in kinds
    assert rpexec_main(["run", str(plan), "--check-grads"]) == 0, capsys.readouterr()


@pytest.mark.parametrize("schedule", ["roundpipe", "1f1b"])
def test_moe_model_matches_reference(tmp_path, schedule, capsys):
    cfg = write_config(tmp_path, TINY_MOE, "moe.json")
    plan = export(tmp_path, cfg, schedule, "4090x2")
    assert rpexec_main(["run", str(plan), "--check-grads"]) == 0, capsys.readouterr()


@pytest.mark.parametrize("schedule, extra, q_lora_rank", [("roundpipe", (), None),
                                                          ("1f1b", ("--recompute", "none"), 12),
                                                          ("gpipe", ("--recompute", "layer"), None)])
def test_deepseek_style_model_matches_reference(tmp_path, schedule, extra, q_lora_rank, capsys):
    """MLA (with and without a low-rank query), shared + routed experts and a leading dense layer, exported
    by rpsim from a config.json, match the single-device reference's gradients."""
    cfg = write_config(tmp_path, {**TINY_DEEPSEEK, "q_lora_rank": q_lora_rank}, "deepseek.json")
    plan = export(tmp_path, cfg, schedule, "4090x2", *extra)
    assert rpexec_main(["run", str(plan), "--check-grads"]) == 0, capsys.readouterr()


@pytest.mark.parametrize("schedule, lag", [("roundpipe", 2), ("roundpipe-sync", 1)])
def test_weight_versions_follow_staleness(tmp_path, tiny, schedule, lag):
    """Async: iteration T+1 computes with the weights after step T-1 (T steps applied: version T);
    sync: iteration T uses the weights after step T-1 (version T)."""
    plan = load_plan(export(tmp_path, tiny, schedule, "4090x2"))
    model, seq, mb, _ = model_and_shape(plan)
    blocks = -(-6 // plan.n_iters)
    result = run_plan(plan, model, seq, mb, RunOptions(blocks=blocks))
    seen = {(it, version) for _layer, it, version in result.load_log}
    assert {it for it, _ in seen} == set(range(blocks * plan.n_iters))
    assert all(version == max(0, it - lag + 1) for it, version in seen), sorted(seen)


@pytest.mark.parametrize("schedule", ["roundpipe", "roundpipe-sync"])
def test_host_buffers_are_reused_not_reallocated(tmp_path, tiny, schedule):
    """Over three blocks of iterations the host pools allocate at most one block's worth of downloads:
    every buffer is back in its pool when a block ends, and the next block takes it from there."""
    plan = load_plan(export(tmp_path, tiny, schedule, "4090x2"))
    model, seq, mb, _ = model_and_shape(plan)
    result = run_plan(plan, model, seq, mb, RunOptions(blocks=3))
    moved = {kind: sum(e.bytes for e in result.trace.events if e.kind == kind) for kind in ("OFFLOAD", "ACT_OUT")}
    pools = result.host_pool_bytes
    assert 0 < pools["gradients"] <= moved["OFFLOAD"] / 3
    assert 0 < pools["activations"] <= moved["ACT_OUT"] / 3


def test_losses_fall_when_training(tmp_path, tiny):
    plan = load_plan(export(tmp_path, tiny, "roundpipe", "4090x2"))
    model, seq, mb, _ = model_and_shape(plan)
    result = run_plan(plan, model, seq, mb, RunOptions(blocks=2, lr=1e-2, same_batch=True))
    first = sum(v for (m, it), v in result.losses.items() if it == 0)
    last = sum(v for (m, it), v in result.losses.items() if it == 5)
    assert last < first


def test_trace_has_every_action(tmp_path, tiny):
    plan_path = export(tmp_path, tiny, "roundpipe", "4090x2")
    trace = tmp_path / "t.json"
    assert rpexec_main(["run", str(plan_path), "--trace", str(trace)]) == 0
    data = json.loads(trace.read_text())
    plan = load_plan(plan_path)
    assert data["format"] == "rpsim.trace" and data["meta"]["source"] == "rpexec"
    assert len(data["events"]) == sum(len(v) for v in plan.lanes.values())
    assert all(e["end_s"] >= e["start_s"] >= 0 for e in data["events"])
    assert any(e["bytes"] > 0 for e in data["events"] if e["kind"] == "LOAD")


@pytest.mark.parametrize("mode, needle", [
    ("raise", "gpu 1, lane compute, action 1F0 failed: RuntimeError: injected fault"),
    ("oom", "out of GPU memory at gpu 1, lane compute, action 1F0"),
])
def test_faults_stop_all_lanes_and_name_the_action(tmp_path, tiny, capsys, mode, needle):
    plan = export(tmp_path, tiny, "1f1b", "4090x2")
    began = time.monotonic()
    code = rpexec_main(["run", str(plan), "--inject-fault", f"1:compute:1F0:{mode}"])
    assert code == 3 and needle in capsys.readouterr().err
    assert time.monotonic() - began < 10


def test_watchdog_names_the_waiting_action(tmp_path, tiny, capsys):
    plan = export(tmp_path, tiny, "1f1b", "4090x2")
    code = rpexec_main(["run", str(plan), "--inject-fault", "1:compute:1F0:hang", "--watchdog-s", "1"])
    err = capsys.readouterr().err
    assert code == 3 and "watchdog" in err and "waited 1 s for" in err


def test_plan_not_matching_the_model_is_refused(tmp_path, tiny, capsys):
    plan = export(tmp_path, tiny, "1f1b", "4090x2")
    data = json.loads(plan.read_text())
    data["setup"]["model"]["n_layers"] = 6
    plan.write_text(json.dumps(data))
    assert rpexec_main(["run", str(plan)]) == 2
    assert "pipeline layers" in capsys.readouterr().err


def test_tied_embeddings_refused_before_work(tmp_path, capsys):
    cfg = write_config(tmp_path, {**TINY, "tie_word_embeddings": True}, "tied.json")
    plan = export(tmp_path, cfg, "1f1b", "4090x2")
    assert rpexec_main(["run", str(plan)]) == 2
    assert "tied embeddings" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_requested_without_gpu_is_refused(tmp_path, tiny, capsys):
    plan = export(tmp_path, tiny, "1f1b", "4090x2")
    assert rpexec_main(["run", str(plan), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_ctrl_c_exits_cleanly(tmp_path, tiny):
    plan = export(tmp_path, tiny, "1f1b", "4090x2")
    proc = subprocess.Popen([sys.executable, "-m", "rpexec.cli", "run", str(plan), "--inject-fault",
                             "1:compute:1F0:hang"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # "rpexec: running ..." once the lanes are about to start
    assert "running" in first
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err


def test_a_shrunk_preset_runs_and_matches(tmp_path, capsys):
    """A preset (qwen3-8b: GQA with per-head q/k norms) shrunk with --model-override to fit a CPU."""
    out = tmp_path / "q.json"
    from rpsim.cli.main import main as rpsim_main
    assert rpsim_main(["export", "--model", "qwen3-8b", "--model-override",
                       "n_layers=4,hidden=64,n_heads=4,n_kv_heads=2,head_dim=16,mlp_width=96,vocab=128",
                       "--gpus", "4090x2", "--seq", "16", "--global-batch", "4", "--n-mb", "2",
                       "--schedule", "roundpipe", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["setup"]["model"]["qk_norm"] is True
    assert rpexec_main(["run", str(out), "--check-grads"]) == 0, capsys.readouterr()


def test_validate_compares_prediction_with_a_measured_trace(tmp_path, tiny, capsys):
    from rpsim.cli.main import main as rpsim_main
    plan = export(tmp_path, tiny, "roundpipe", "4090x2")
    trace = tmp_path / "t.json"
    assert rpexec_main(["run", str(plan), "--trace", str(trace)]) == 0
    capsys.readouterr()
    assert rpsim_main(["validate", "--plan", str(plan), "--measured", str(trace), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["iteration_s"]["measured"] > 0 and data["iteration_s"]["predicted"] > 0
    classes = {r["class"]: r for r in data["classes"]}
    assert {"F", "B", "FB", "LOAD", "OFFLOAD", "ACT_IN", "ACT_OUT", "STEP"} <= set(classes)
    assert all(r["n_predicted"] == r["n_measured"] for r in classes.values())  # the same actions, timed twice
    assert rpsim_main(["validate", "--plan", str(plan), "--measured", str(trace)]) == 0
    assert "iteration_s" in capsys.readouterr().out
