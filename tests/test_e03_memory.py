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
# A backward makes each layer's gradient when its walk reaches the layer, so the first backward of a
# streamed job peaks (at its top layer, or the head's loss backward) before any of its gradients exist
# (rpsim.sim.memory.backward_peak_bytes). Counting the job's gradients from that action's start, as the
# rules did before, put the 2.8B RoundPipe-sync run on one GPU at 13.44 GiB against 11.87 measured (+13%);
# it now predicts 11.84. Two runs stay outside 10%:
# - llama-0.7b roundpipe-sync on 2 GPUs: 3.47 GiB predicted, 4.03 / 3.72 measured on GPU 0 / 1. e03 runs
#   every schedule of a size in one process, resetting only the peak statistics, so a run's peak includes
#   what earlier runs left allocated. In the 0.7B group the measured-minus-predicted residual grows by
#   0.03-0.06 GiB per earlier run on the same GPU, for fixed placements too: 0.07, 0.13, 0.19 GiB on one
#   GPU (gpipe, 1f1b, interleaved), 0.44-0.56 on GPU 0 and 0.03, 0.16, 0.22 on GPU 1 of the 2-GPU runs
#   that followed, consistent with torch's cuBLAS workspace (tens of MiB) kept per (thread handle,
#   CUDA stream) that ran a GEMM, two per run and GPU here (the compute lane's thread and autograd's),
#   never freed until torch._C._cuda_clearCublasWorkspaces(); this run is GPU 0's ninth.
#   benchmarks/memory_timeline_probe.py measures what earlier runs leave (GPU only).
# - llama-1.8b roundpipe-sync on one GPU: 4.88 GiB predicted, 5.72 measured (-15%). Every 1.8B run on
#   one GPU measured 0.7-0.8 GiB above the rules, fixed placements included (gpipe +0.69, 1f1b +0.75,
#   interleaved +0.82, this run +0.84: the same step per run as the 0.7B group's, from a higher
#   start); the 2.8B ones +1.3 (fixed) but 0.0 (this schedule), so the offset is not one of the
#   schedule's buffers. Before the change above the rules hid it by over-counting the FB's gradients
#   and a layer transient (5.55 GiB). The probe above records this run's live blocks at its peak.
UNEXPLAINED = {"llama-0.7b-roundpipe-sync-2gpu", "llama-1.8b-roundpipe-sync-1gpu"}
UNEXPLAINED_ON_MEASURED_TIMING = UNEXPLAINED
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
                                       if _id(p) in UNEXPLAINED_ON_MEASURED_TIMING else p for p in PLANS], ids=_id)
def test_memory_rules_on_the_measured_timing_give_the_measured_peak(plan_path):
    """The rules alone, timed by the measured trace itself: the run's peak (the largest over its GPUs)
    within 10%. (GPU 0 of the 2-GPU RoundPipe runs measured 0.4-1.4 GiB above the rules while GPU 1
    matched; the peak over both GPUs stays within 10%.)"""
    plan, sc, trace = _run(plan_path)
    n_iters = max(e.it for e in trace.events) + 1
    mem = memory_timeline(replace(plan, n_iters=n_iters), trace, cost_context(plan, sc))
    predicted = max(mem.peak_bytes(gpu) for gpu in range(plan.n_gpus))
    assert predicted == pytest.approx(max(trace.meta["peak_gpu_mem_bytes"]), rel=TOLERANCE)


# The async 2.8B run on 2 GPUs, measured on an earlier lease, peaked at the end of its run with 14.4 GiB of
# weights and gradients on GPU 0 (23.6 GiB in all, -14.5%); re-measured with the current rpexec in one lease
# with the other async runs (session 5) it peaks at 20.82 GiB against 20.18 predicted.
# With the host-issue timing model (main, e708be6) the async 0.7B run on one GPU predicts 9.2 GiB against
# 11.3: its gradient backlog depends on how far the host optimizer falls behind (11.5 GiB with the
# optimizer at its measured in-run rate, docs/memory.md).
GROWING_BACKLOG = {"llama-0.7b-roundpipe-1gpu"}


@pytest.mark.skipif(not PLANS, reason="experiments/data/e03 holds no runs")
@pytest.mark.parametrize("plan_path", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="gradient backlog still growing at the run's end"))
    if _id(p) in GROWING_BACKLOG else
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
