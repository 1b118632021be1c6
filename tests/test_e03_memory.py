"""Predicted peak GPU memory against rpexec's measured peaks (torch.cuda.max_memory_allocated) on the
e03 runs (2x H200, experiments/data/e03), and against the roundpipe library's measured peak in the
issue-8 benchmark (experiments/data/rpexec-h200x2/bench.json)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rpsim.ir.planio import load_plan
from rpsim.scenario import scenario_from_setup
from rpsim.sim.memory import memory_timeline
from rpsim.sim.simulate import cost_context, simulate
from rpsim.sim.trace import load_trace

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "data" / "e03"
PLANS = sorted(DATA.glob("*-plan.json"))
TOLERANCE = 0.10
# The Llama-3-8B RoundPipe run of an earlier lease measured 15% above the rules (51.1 GiB against 43.3);
# re-measured with today's rpexec and plan (session 5) it peaks at 52.33 GiB against 51.95 predicted.
# Its RoundPipe-sync run measured 40.3 GiB while rpexec restarted its interpreter per iteration; run as one
# interpreter (session 4) it measures 33.6 against 33.55 predicted: the restart left the previous block's
# buffers allocated while the next block's uploads began.
# The 0.7B RoundPipe-sync run on 2 GPUs measured 4.03 GiB on GPU 0 in sessions 4-5 (3.50 by the rules);
# re-measured in session 6 (rpexec's scripted host STEP) it peaks at 3.53 on both GPUs. (In session 4's
# process every earlier run had raised the residual of the next by 0.03-0.06 GiB on the same GPU, fixed
# placements too, as torch's cuBLAS workspaces, one per thread handle and stream that ran a GEMM, would.)
# RoundPipe-sync on one GPU held less than the rules placed (2.8B 11.87 GiB against 13.44, 1.8B 4.91
# against 5.55): the rules counted the fused stage's gradients from the FB's start and a layer's transient
# on top of the head's loss backward. A backward makes each layer's gradient when its walk reaches the
# layer, so a streamed job's first backward peaks (its top layer, or the head's loss backward) before its
# gradients exist (rpsim.sim.memory.backward_peak_bytes): the rules now give 11.84 and 4.88.
UNEXPLAINED: set[str] = set()
UNEXPLAINED_MARK = pytest.mark.xfail(strict=True, reason="memory the rules do not place (see UNEXPLAINED)")


def _run(plan_path: Path):
    plan = load_plan(plan_path)
    setup = dict(plan.setup)
    setup["profile"] = str(DATA / Path(setup["profile"]).name)
    sc = scenario_from_setup(setup)
    trace = load_trace(str(plan_path).replace("-plan.json", "-trace.json"))
    return plan, sc, trace


def _id(p: Path) -> str:
    return p.name.removesuffix("-plan.json")


@pytest.mark.skipif(not PLANS, reason="experiments/data/e03 holds no runs")
@pytest.mark.parametrize("plan_path", [pytest.param(p, marks=UNEXPLAINED_MARK)
                                       if _id(p) in UNEXPLAINED else p for p in PLANS], ids=_id)
def test_memory_rules_on_the_measured_timing_give_the_measured_peak(plan_path):
    """The rules alone, timed by the measured trace itself: the run's peak (the largest over its GPUs)
    within 10%. (GPU 0 of the 2-GPU RoundPipe runs measured 0.4-1.4 GiB above the rules while GPU 1
    matched; the peak over both GPUs stays within 10%.)"""
    plan, sc, trace = _run(plan_path)
    n_iters = max(e.it for e in trace.events) + 1
    mem = memory_timeline(replace(plan, n_iters=n_iters), trace, cost_context(plan, sc))
    predicted = max(mem.peak_bytes(gpu) for gpu in range(plan.n_gpus))
    assert predicted == pytest.approx(max(trace.meta["peak_gpu_mem_bytes"]), rel=TOLERANCE)


# Until session 7 a gradient download waited for its layer's previous STEP (grad_fence "offload"), so
# async RoundPipe on one GPU held the gradients its host optimizer had not summed yet, and its peak was a
# race with the STEP: the same 1.8B plan measured 27.41, 25.91 and 19.18 GiB in three calls of one session
# (experiments/data/e03-download-fence-2026-11-30.tar.gz keeps those runs: 0.7B 8.38, 1.8B 19.18, 2.8B 33.26 GiB,
# predicted 11.23, 27.06, 46.21). Since session 8 downloads wait for no STEP (grad_fence "none"; the
# backlog sits in host memory), and the re-measured runs peak at 3.38, 5.04 and 12.12 GiB against 3.34,
# 4.88 and 11.84 predicted: the peak no longer follows the host's timing.


@pytest.mark.skipif(not PLANS, reason="experiments/data/e03 holds no runs")
@pytest.mark.parametrize("plan_path", [
    pytest.param(p, marks=UNEXPLAINED_MARK) if _id(p) in UNEXPLAINED else p for p in PLANS], ids=_id)
def test_predicted_peak_within_10_percent_of_measured(plan_path):
    plan, sc, trace = _run(plan_path)
    predicted = max(simulate(plan, sc).metrics["peak_gpu_allocated_bytes"])
    assert predicted == pytest.approx(max(trace.meta["peak_gpu_mem_bytes"]), rel=TOLERANCE)


BENCH = ROOT / "experiments" / "data" / "rpexec-h200x2" / "bench.json"


@pytest.mark.skipif(not BENCH.exists() or not (DATA / "llama-2.8b-profile.json").exists(),
                    reason="no benchmark data")
def test_library_peak_within_10_percent_of_measured():
    """The roundpipe library on the benchmark's 2.8B model (rpexec's layers, handed to the library as an
    nn.Sequential, fp16, full logits through the benchmark's loss_fn, 8 x 8 x 2048 tokens, 2 GPUs), planned
    as the library runs it (rpsim.planner.roundpipe_library_request): its partitioner's plan, whose fused
    stage is the head alone, peaks at the head's backward like rpexec's. The library starts a backward job
    only after its layers' previous gradient copy (grad_fence "backward"), so no gradient waits on the GPU
    for the host optimizer. Predicted 7.26 GiB against 6.66 measured (+9.0%). At the predicted peak (the
    head's loss backward, 7th of 8 microbatches) the rules also hold the next microbatches' uploaded
    inputs (5 x 96 MiB) and the next stage's weights (0.19 GiB), because the plan's transfer lanes
    prefetch them; the library issues both from the device's one thread right before the compute that
    reads them (roundpipe 0.1.1 run.py: run_forward_backward's async_h2d, run_backward's upload_layers at
    microbatch 0), after that thread has dropped the previous microbatch's tensors, so torch's allocated
    bytes never hold them together (6.60 GiB at that moment, counted tensor by tensor)."""
    from rpsim.compare import run_one
    from rpsim.planner import roundpipe_library_request
    from rpsim.scenario import make_scenario
    from rpsim.specs import ModelSpec, TrainingSpec
    model = ModelSpec(name="llama-2.8b", n_layers=26, hidden=3072, n_heads=24, n_kv_heads=8, head_dim=128,
                      mlp_width=8192, vocab=32000)  # experiments/e03_sim_vs_real.py SIZES
    train = TrainingSpec(seq_len=2048, global_batch=64, mb_size=8, precision="fp16")
    sc = make_scenario(model, "h200x2", train, str(DATA / "llama-2.8b-profile.json"), gpu_memory_bytes=24 * 2**30)
    predicted = run_one(sc, roundpipe_library_request(train.n_mb)).metrics
    measured = next(r for r in json.loads(BENCH.read_text())["results"] if r["system"].startswith("roundpipe library"))
    assert max(predicted["peak_gpu_allocated_bytes"]) == pytest.approx(max(measured["peak_gpu_mem_bytes"]),
                                                                       rel=TOLERANCE)
