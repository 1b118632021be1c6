"""rpexec on real GPUs (skipped without CUDA): every schedule on 1 and on 2 GPUs matches the reference,
in fp32 exactly and in bf16 within half-precision tolerances, and a RoundPipe async trace can be drawn.
A test whose plan needs more GPUs than the machine has is skipped, so a one-GPU machine runs the
one-GPU half (every schedule and the pools on one device) and a two-GPU machine all of them."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from rpexec.cli import main as rpexec_main
from rpsim.cli.main import main as rpsim_main
from rpsim.schedules import SCHEDULES as ALL_SCHEDULES
from tests.rpexec_helpers import TINY, TINY_DEEPSEEK, export, write_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
SCHEDULES = list(ALL_SCHEDULES)  # by discovery: every builder, new ones included
GPU_MODEL = {**TINY, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 8,
             "num_key_value_heads": 4, "vocab_size": 512}


def needs(gpus: str) -> None:
    """Skip unless this machine has the GPUs of the preset `gpus` ("h200x2": 2)."""
    n = int(gpus.rsplit("x", 1)[1])
    if torch.cuda.device_count() < n:
        pytest.skip(f"{gpus} needs {n} CUDA GPUs, this machine has {torch.cuda.device_count()}")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("gpu"), GPU_MODEL)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("gpus", ["h200x1", "4090x2", "h200x2"])
def test_schedule_on_gpus_matches_reference(tmp_path, config, schedule, gpus, dtype, capsys):
    needs(gpus)
    plan = export(tmp_path, config, schedule, gpus)
    code = rpexec_main(["run", str(plan), "--device", "cuda", "--dtype", dtype, "--check-grads"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "check-grads ok" in out.out


def test_roundpipe_async_trace_is_drawn(tmp_path, config):
    needs("4090x2")
    plan = export(tmp_path, config, "roundpipe", "4090x2")
    trace = tmp_path / "trace.json"
    n_iters = 2 * json.loads(plan.read_text())["n_iters"]  # --iters repeats the plan's iterations
    assert rpexec_main(["run", str(plan), "--device", "cuda", "--iters", str(n_iters), "--trace", str(trace)]) == 0
    events = json.loads(trace.read_text())["events"]
    assert {e["gpu"] for e in events} >= {0, 1}
    out = tmp_path / "trace.png"
    assert rpsim_main(["plot", "--trace", str(trace), "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("schedule", ["roundpipe", "1f1b"])
def test_chunked_loss_on_gpus_matches_reference(tmp_path, config, schedule, dtype, capsys):
    needs("h200x2")
    plan = export(tmp_path, config, schedule, "h200x2", "--loss-chunk-tokens", "24")
    code = rpexec_main(["run", str(plan), "--device", "cuda", "--dtype", dtype, "--check-grads"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "check-grads ok" in out.out


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("schedule, gpus, q_lora_rank", [("roundpipe", "4090x2", None), ("1f1b", "h200x2", 12),
                                                         ("roundpipe", "h200x1", 12)])
def test_deepseek_style_model_on_gpus_matches_reference(tmp_path, schedule, gpus, q_lora_rank, dtype, capsys):
    """MLA (its value heads narrower than its query/key heads, so SDPA leaves the flash kernel) and
    shared + routed experts after a dense layer, on CUDA."""
    needs(gpus)
    cfg = write_config(tmp_path, {**TINY_DEEPSEEK, "q_lora_rank": q_lora_rank, "hidden_size": 128,
                                  "vocab_size": 512}, "deepseek.json")
    plan = export(tmp_path, cfg, schedule, gpus)
    code = rpexec_main(["run", str(plan), "--device", "cuda", "--dtype", dtype, "--check-grads"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "check-grads ok" in out.out


@pytest.mark.parametrize("gpus", ["h200x1", "4090x2"])
def test_pinned_buffers_are_reused_across_blocks_on_gpus(tmp_path, config, gpus):
    """Pinned host buffers come back to their pools guarded by CUDA events; three blocks of iterations
    allocate no more than one block's worth of downloads."""
    needs(gpus)
    from rpexec.checks import model_and_shape
    from rpexec.session import RunOptions, run_plan
    from rpsim.ir.planio import load_plan
    plan = load_plan(export(tmp_path, config, "roundpipe", gpus))
    model, seq, mb, _ = model_and_shape(plan)
    result = run_plan(plan, model, seq, mb, RunOptions(device="cuda", dtype="bf16", blocks=3))
    moved = {kind: sum(e.bytes for e in result.trace.events if e.kind == kind) for kind in ("OFFLOAD", "ACT_OUT")}
    assert 0 < result.host_pool_bytes["gradients"] <= moved["OFFLOAD"] / 3
    assert 0 < result.host_pool_bytes["activations"] <= moved["ACT_OUT"] / 3
