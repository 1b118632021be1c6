"""GPU and host memory over time: 1F1B holds fewer activations than GPipe, an over-full plan is infeasible
with a reason naming the GPU, every buffer is freed, and uploads and outputs live exactly as long as
the rules say (checked on a trace drawn by hand)."""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import replace

import pytest

from rpsim.errors import PlanError
from rpsim.ir import CPU, Action
from rpsim.ir.validate import check_plan
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import Scenario, make_scenario
from rpsim.schedules import SCHEDULES
from rpsim.sim.action_costs import boundary_bytes, transfer_bytes
from rpsim.sim.memory import ALLOCATOR_OVERHEAD, MemoryTimeline, memory_timeline
from rpsim.sim.simulate import cost_context, simulate
from rpsim.sim.trace import Trace, TraceEvent
from rpsim.specs import ModelSpec, TrainingSpec

GiB = 2**30
TINY = ModelSpec(name="tiny", n_layers=8, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64, mlp_width=512,
                 vocab=1024)


def level_at(mem: MemoryTimeline, device: int, t: float) -> float:
    steps = mem.steps.get(device, [])
    i = bisect_right([s for s, _ in steps], t)
    return steps[i - 1][1] if i else 0.0


def test_unfenced_gradients_leave_the_gpu_whatever_the_host_optimizer_rate():
    """grad_fence="none" (rpexec's default since session 8): downloads wait for no STEP, so the GPU
    peak does not follow the host optimizer's rate, while "offload" (one host buffer per layer, reused)
    keeps gradients on the GPU while the optimizer falls behind. The plan file keeps the fence, so the
    rule that timed a plan is the one rpexec follows; an unknown fence is refused, naming its path."""
    from rpsim.ir.deps import dependency_graph
    from rpsim.ir.planio import plan_from_json, plan_to_json
    sc = _tiny(2, 4)
    peaks = {}
    for rate in (1e6, 1e12):
        cpu = replace(sc, server=replace(sc.server, host=replace(sc.server.host, adam_params_per_s=rate)))
        for f in ("offload", "none"):
            plan = make_plan(cpu, PlanRequest("roundpipe", fidelity="pcie", grad_fence=f))
            peaks[(f, rate)] = max(simulate(plan, cpu).metrics["peak_gpu_allocated_bytes"])
    unfenced = make_plan(sc, PlanRequest("roundpipe", fidelity="pcie"))
    assert unfenced.options["grad_fence"] == "none"
    assert plan_from_json(plan_to_json(unfenced)).options["grad_fence"] == "none"
    bad = plan_to_json(unfenced)
    bad["options"]["grad_fence"] = "later"
    with pytest.raises(PlanError, match=r"\$\.options\.grad_fence: 'later' unknown; valid choices: none, offload"):
        plan_from_json(bad)
    assert not any(u[1].kind == "STEP" and v[1].kind == "OFFLOAD" and v[1].it > u[1].it
                   for u, v in dependency_graph(unfenced).edges)
    assert peaks[("none", 1e6)] == pytest.approx(peaks[("none", 1e12)], rel=1e-9)
    assert peaks[("offload", 1e6)] > 1.2 * peaks[("none", 1e6)]


@pytest.mark.parametrize("recompute", ["stage", "none"])
def test_1f1b_peak_gpu_memory_is_at_most_gpipes(recompute):
    # 8 microbatches over 4 stages: GPipe keeps all 8 microbatches' activations, 1F1B at most 4 - s.
    sc = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(seq_len=2048, global_batch=16, mb_size=2,
                                                            recompute=recompute))
    peaks = {}
    for schedule in ("gpipe", "1f1b"):
        result = simulate(make_plan(sc, PlanRequest(schedule, fidelity="pcie", weights="resident")), sc)
        assert result.metrics["weights"] == "resident"
        peaks[schedule] = result.metrics["peak_gpu_mem_bytes"]
    assert all(a <= b for a, b in zip(peaks["1f1b"], peaks["gpipe"], strict=True))
    assert any(a < b - 0.01 * GiB for a, b in zip(peaks["1f1b"], peaks["gpipe"], strict=True))


def test_a_plan_over_gpu_memory_is_infeasible_and_names_the_gpu():
    # qwen3-8b with weights, gradients and Adam state resident: ~8.2 G params x 16 B over 4 GPUs > 24 GiB.
    sc = make_scenario("qwen3-8b", "4090x4", TrainingSpec(seq_len=2048, global_batch=16, mb_size=2))
    m = simulate(make_plan(sc, PlanRequest("1f1b", fidelity="pcie", weights="resident")), sc).metrics
    assert m["feasible"] is False
    match = re.fullmatch(r"GPU (\d+) needs (\d+\.\d) GiB, has 24\.0 GiB", m["reason"])
    assert match, m["reason"]
    peaks = m["peak_gpu_mem_bytes"]
    worst = max(range(4), key=peaks.__getitem__)
    assert int(match[1]) == worst and float(match[2]) == round(peaks[worst] / GiB, 1) > 24.0


def test_the_same_model_streamed_fits():
    sc = make_scenario("qwen3-8b", "4090x4", TrainingSpec(seq_len=2048, global_batch=16, mb_size=2))
    m = simulate(make_plan(sc, PlanRequest("roundpipe", fidelity="pcie")), sc).metrics
    assert m["feasible"] is True and m["reason"] == ""
    assert max(m["peak_gpu_mem_bytes"]) < 24 * GiB
    # Streamed: fp16 weights and gradients, fp32 master and Adam state live in host memory.
    states = sum(x.weight_bytes + x.grad_bytes + x.optim_bytes for x in sc.costs.layers)
    assert states <= m["peak_host_mem_bytes"] < states * 1.5


def _tiny(n_gpus: int, n_mb: int) -> Scenario:
    return make_scenario(TINY, f"4090x{n_gpus}", TrainingSpec(seq_len=128, global_batch=2 * n_mb, mb_size=2))


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_buffer_is_freed_by_the_end(schedule):
    sc = _tiny(4, 8)  # 2N microbatches: enough for every schedule (DualPipeV needs M >= 2N)
    plan = make_plan(sc, PlanRequest(schedule, fidelity="pcie"))
    result = simulate(plan, sc)
    layers = sc.costs.layers
    for gpu in range(plan.n_gpus):
        states = 0.0
        if plan.options["weights"] == "resident":  # model states stay on their GPU
            stages = {a.stage for a in plan.lane(gpu, "compute") if a.is_compute}
            states = sum(x.weight_bytes + x.grad_bytes + x.optim_bytes
                         for s in stages for x in layers[slice(*plan.partition.fwd[s])])
        final = result.memory.steps[gpu][-1][1]
        assert final == pytest.approx(states, rel=1e-12, abs=1.0)
        assert result.memory.peak_bytes(gpu) > states  # something was allocated and freed
        assert result.metrics["peak_gpu_mem_bytes"][gpu] == pytest.approx(
            result.memory.peak_bytes(gpu) * ALLOCATOR_OVERHEAD)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_host_holds_two_trainable_weight_versions_and_each_download_until_its_step(mode):
    """Streamed plans' host memory (rpexec.hostparams): fp32 master and Adam state, the compute-dtype
    weights plus a second version of what the optimizer updates (frozen LoRA base weights need one),
    always; each gradient download's staging buffer from its start until the STEP that sums it ends. So
    the run ends at exactly the states, and with an optimizer slower than the GPUs the unfenced plan's
    backlog shows in host memory, not on the GPU."""
    from rpsim.costs.layer_costs import WEIGHT_BYTES_PER_PARAM
    sc = make_scenario(TINY, "4090x2", TrainingSpec(seq_len=128, global_batch=8, mb_size=2, mode=mode))
    slow = replace(sc, server=replace(sc.server, host=replace(sc.server.host, adam_params_per_s=1e6)))
    states = sum(x.weight_bytes + x.trainable_params * WEIGHT_BYTES_PER_PARAM + x.optim_bytes
                 for x in sc.costs.layers)
    runs = {f: simulate(make_plan(slow, PlanRequest("roundpipe", fidelity="pcie", grad_fence=f)), slow)
            for f in ("offload", "none")}
    for result in runs.values():
        assert result.memory.steps[CPU][-1][1] == pytest.approx(states, rel=1e-12)
    staged = {f: r.memory.peak_bytes(CPU) - states for f, r in runs.items()}
    assert staged["none"] > staged["offload"] > 0
    assert max(runs["none"].metrics["peak_gpu_allocated_bytes"]) < max(runs["offload"].metrics["peak_gpu_allocated_bytes"])


def test_fused_stage_upload_and_output_live_until_used_and_moved():
    """RoundPipe's fused last stage (FB): its upload is held until FB ends; its output gradient, made at
    the end of FB's backward walk, from FB's end until the download that moves it ends. Timed by hand:
    upload [1, 2], FB [3, 5], download [5, 6]."""
    sc = _tiny(2, 2)
    plan = make_plan(sc, PlanRequest("roundpipe-sync", fidelity="pcie"))
    last = len(plan.partition.bwd) - 1
    fb = Action("FB", last, 0, 0)
    up, down = Action("ACT_IN", last, 0, 0, "B"), Action("ACT_OUT", last, 0, 0, "B")
    gpu = next(g for g in range(plan.n_gpus) if fb in plan.lane(g, "compute"))
    assert up in plan.lane(gpu, "h2d") and down in plan.lane(gpu, "d2h")

    def ev(a: Action, lane: str, s: float, e: float) -> TraceEvent:
        return TraceEvent(gpu=gpu, lane=lane, action=str(a), kind=a.kind, stage=a.stage, mb=a.mb, it=a.it,
                          start_s=s, end_s=e)

    trace = Trace((ev(up, "h2d", 1, 2), ev(fb, "compute", 3, 5), ev(down, "d2h", 5, 6)))
    ctx = cost_context(plan, sc)
    mem = memory_timeline(plan, trace, ctx)
    lo, hi = plan.partition.bwd[last]
    n_in, n_out = transfer_bytes(ctx, up), boundary_bytes(ctx, lo)
    span = sc.costs.layers[lo:hi]
    # FB's peak is the head's loss backward over every activation of the stage; a layer's transient and
    # the gradients made before it come after the head's activations are freed, and are smaller here.
    head, below = span[-1], span[:-1]
    assert head.activation_bytes > max(x.backward_extra_bytes + 2 * x.grad_bytes for x in span)
    work = sum(x.activation_bytes for x in span)
    assert n_in > 0 and n_out > 0 and below
    assert level_at(mem, gpu, 2.5) == n_in  # uploaded, FB not started: the upload stays
    assert level_at(mem, gpu, 4.0) == pytest.approx(n_in + work)
    assert level_at(mem, gpu, 5.5) == pytest.approx(n_out)  # output waits for its download
    assert level_at(mem, gpu, 7.0) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("drop", ["LOAD", "FREE"])
def test_streamed_plans_need_every_load_and_free_the_memory_rules_use(drop):
    # A layer's weights live from its LOAD to its job's FREE; a plan missing either is rejected up front.
    plan = make_plan(_tiny(2, 2), PlanRequest("roundpipe-sync", fidelity="pcie"))
    lane = "param_h2d" if drop == "LOAD" else "compute"
    victim = next(a for a in plan.lane(1, lane) if a.kind == drop)
    lanes = {**plan.lanes, (1, lane): tuple(a for a in plan.lane(1, lane) if a != victim)}
    with pytest.raises(PlanError, match="no LOAD for its job" if drop == "LOAD" else "never freed"):
        check_plan(replace(plan, lanes=lanes))


def _one_gpu_gpipe(recompute: str, layer_impl: str = "rpexec"):
    train = TrainingSpec(seq_len=128, global_batch=8, mb_size=2, recompute=recompute, layer_impl=layer_impl)
    sc = make_scenario(TINY, "h200x1", train)
    return sc, simulate(make_plan(sc, PlanRequest("gpipe", fidelity="pcie", weights="resident")), sc)


@pytest.mark.parametrize("layer_impl", ["rpexec", "hf-fa2", "paper"])
def test_one_gpu_stage_grain_peak_is_states_plus_one_microbatchs_activations(layer_impl):
    """GPipe on one GPU is one stage: every F keeps only token ids (the stage input of layer 0 is not an
    activation), and its B recomputes the whole model with grad, so the peak is the model states plus
    every layer's activations of one microbatch, the head's loss working set included. The largest
    gradient transient a layer's backward adds (its SwiGLU node: 2 x 2·m per token; none in the formula)
    comes after the head's backward has freed the head's activations, which are larger: it adds nothing."""
    sc, result = _one_gpu_gpipe("stage", layer_impl)
    layers = sc.costs.layers
    states = sum(x.weight_bytes + x.grad_bytes + x.optim_bytes for x in layers)
    assert result.metrics["peak_gpu_allocated_bytes"] == [pytest.approx(
        states + sum(x.activation_bytes for x in layers), rel=1e-12)]
    extra = 4.0 * 2 * 128 * TINY.mlp_width if layer_impl != "paper" else 0.0
    assert max(x.backward_extra_bytes for x in layers) == extra < layers[-1].activation_bytes
    assert result.metrics["peak_gpu_mem_bytes"] == [pytest.approx(
        ALLOCATOR_OVERHEAD * result.metrics["peak_gpu_allocated_bytes"][0], rel=1e-12)]


def test_one_gpu_layer_grain_peak_keeps_every_layer_input_and_recomputes_one_layer():
    """recompute="layer": each F keeps every inner layer input until its B (rpexec
    handlers._saved_boundaries); a B recomputes one layer at a time (handlers._backward_per_layer). GPipe
    runs all 4 forwards first, so the first backward starts with 4 microbatches' inputs and its working
    set is the largest one layer's activations and backward transient."""
    sc, result = _one_gpu_gpipe("layer")
    layers = sc.costs.layers
    states = sum(x.weight_bytes + x.grad_bytes + x.optim_bytes for x in layers)
    inner_inputs = sum(x.input_bytes for x in layers[1:])
    expected = states + 4 * inner_inputs + max(x.activation_bytes + x.backward_extra_bytes for x in layers)
    assert result.metrics["peak_gpu_allocated_bytes"] == [pytest.approx(expected, rel=1e-12)]


def test_library_grad_fence_moves_the_wait_from_the_download_to_the_backward():
    """grad_fence="backward" (the roundpipe library's LayerAttribute.backward_fence): no gradient
    download waits for a CPU STEP; each backward job's first compute waits for its layers' STEP two
    iterations back. With a host optimizer too slow to keep up, rpexec's rule ("offload") leaves
    gradients waiting on the GPU, the library's does not, so its peak is lower."""
    from rpsim.ir.deps import dependency_graph
    from rpsim.ir.jobs import jobs_of
    sc = _tiny(2, 4)
    slow_cpu = replace(sc, server=replace(sc.server, host=replace(sc.server.host, adam_params_per_s=1e6)))
    plans = {f: make_plan(slow_cpu, PlanRequest("roundpipe", fidelity="pcie", grad_fence=f))
             for f in ("offload", "backward")}
    g = dependency_graph(plans["backward"])
    assert not any(u[1].kind == "STEP" and v[1].kind == "OFFLOAD" for u, v in g.edges)
    fenced = [(u, v) for u, v in g.edges if u[1].kind == "STEP" and v[1].is_compute]
    assert fenced and all(v[1].it == u[1].it + 2 and v[1].kind in ("B", "FB") for u, v in fenced)
    first_backward = {(gpu, job.actions[0]) for gpu in range(2) for job in jobs_of(plans["backward"], gpu)
                      if job.it >= 2 and job.actions[0].kind in ("B", "FB")}
    assert {v for _u, v in fenced} == first_backward
    peaks = {f: max(simulate(p, slow_cpu).metrics["peak_gpu_allocated_bytes"]) for f, p in plans.items()}
    assert peaks["backward"] < peaks["offload"]
    with pytest.raises(Exception, match="grad_fence 'x' unknown; valid choices: none, offload, backward"):
        make_plan(sc, PlanRequest("roundpipe", grad_fence="x"))


@pytest.mark.parametrize("recompute", ["stage", "none"])
def test_what_w_needs_stays_from_its_i_until_w_ends(recompute):
    """One GPU, one stage, F [0, 1], I [1, 2], then W only at [5, 6]: between I and W the GPU holds the
    stage's activations (the retained graph) and the gradient reaching each segment's output (one per
    layer under recompute, the stage output's without, here the head's: none), and nothing after W."""
    from rpsim.ir import Partition
    from rpsim.schedules import get_schedule
    from rpsim.schedules.base import BuildOptions
    from rpsim.sim.memory import memory_timeline
    from rpsim.sim.simulate import cost_context
    from rpsim.sim.trace import Trace, TraceEvent
    sc = make_scenario(TINY, "4090x1", TrainingSpec(seq_len=128, global_batch=2, mb_size=2, recompute=recompute))
    n = len(sc.costs.layers)
    plan = get_schedule("zb-h1").build(1, Partition.same(((0, n),)), 1, BuildOptions(recompute=recompute))
    plan = replace(plan, level="ideal")
    times = {"0F0": (0.0, 1.0), "0I0": (1.0, 2.0), "0W0": (5.0, 6.0)}
    trace = Trace(tuple(TraceEvent(0, "compute", t, t[1], 0, 0, 0, s, e) for t, (s, e) in times.items()))
    mem = memory_timeline(plan, trace, cost_context(plan, sc))
    level = {t: b for t, b in mem.steps[0]}  # the level after every change at t
    layers = sc.costs.layers
    grads = 0.0 if recompute == "none" else sum(x.input_bytes for x in layers[1:n])
    assert level[2.0] == pytest.approx(sum(x.activation_bytes for x in layers) + grads, rel=1e-12)
    assert level[6.0] == pytest.approx(0.0, abs=1e-6)


def test_a_streamed_jobs_gradients_appear_as_its_first_backward_makes_them():
    """A job of two microbatches on a stateless GPU (RoundPipe-sync, stage 2 = layers 5-6), timed by hand:
    LOADs [0, 1] and [1, 2], backwards [3, 4] and [5, 6], FREE [6, 6.1], OFFLOADs [6.5, 7] and [7, 7.5].
    The first backward walks from layer 6 (all activations, its transient) to layer 5 (its activations,
    its transient, layer 6's gradient just made); the gradients then stay until downloaded, and the
    second backward runs on top of them."""
    sc = _tiny(2, 2)
    plan = make_plan(sc, PlanRequest("roundpipe-sync", fidelity="pcie"))
    b0, b1 = Action("B", 2, 0, 0), Action("B", 2, 1, 0)
    assert plan.partition.bwd[2] == (5, 7) and (b0, b1) == tuple(plan.lane(0, "compute")[3:5])
    x5, x6 = sc.costs.layers[5:7]

    def ev(a: Action, lane: str, s: float, e: float) -> TraceEvent:
        return TraceEvent(gpu=0, lane=lane, action=str(a), kind=a.kind, stage=a.stage, mb=a.mb, it=a.it,
                          start_s=s, end_s=e)

    load = [Action("LOAD", 2, 0, 0, "B", chunk=c) for c in (5, 6)]
    offload = [Action("OFFLOAD", 2, 0, 0, "B", chunk=c) for c in (5, 6)]
    trace = Trace((ev(load[0], "param_h2d", 0, 1), ev(load[1], "param_h2d", 1, 2), ev(b0, "compute", 3, 4),
                   ev(b1, "compute", 5, 6), ev(Action("FREE", 2, 0, 0, "B"), "compute", 6, 6.1),
                   ev(offload[0], "grad_d2h", 6.5, 7), ev(offload[1], "grad_d2h", 7, 7.5)))
    mem = memory_timeline(plan, trace, cost_context(plan, sc))
    weights, grads = x5.weight_bytes + x6.weight_bytes, x5.grad_bytes + x6.grad_bytes
    top = x5.activation_bytes + x6.activation_bytes + x6.backward_extra_bytes
    first = max(top, x5.activation_bytes + x5.backward_extra_bytes + x6.grad_bytes)
    later = max(top, x5.activation_bytes + x5.backward_extra_bytes)
    assert level_at(mem, 0, 0.5) == pytest.approx(x5.weight_bytes)  # a layer's weights from its LOAD's start
    assert level_at(mem, 0, 3.5) == pytest.approx(weights + first)
    assert level_at(mem, 0, 4.5) == pytest.approx(weights + grads)
    assert level_at(mem, 0, 5.5) == pytest.approx(weights + grads + later)
    assert level_at(mem, 0, 6.3) == pytest.approx(grads)
    assert level_at(mem, 0, 7.2) == pytest.approx(x6.grad_bytes)
    assert level_at(mem, 0, 8.0) == pytest.approx(0.0, abs=1e-6)
