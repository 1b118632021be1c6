"""rpexec's warm-up: host state allocated and touched and every kind of layer's kernels run once before
iteration 0 without changing a single number of the run, host pools sized from rpsim's prediction, and
the trace's steady-iteration marks."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rpexec.checks import model_and_shape
from rpexec.device import DeviceState
from rpexec.hostparams import HostParams
from rpexec.kernel_warmup import layers_run_on, representative_layers, warm_kernels
from rpexec.model import build_layers, skeleton_layers
from rpexec.session import RunOptions, run_plan, steady_iterations
from rpexec.warmup import predicted_pool_demand, warm_host_state
from rpsim.ir.planio import load_plan
from rpsim.validate_run import steady_iteration_s
from tests.rpexec_helpers import TINY, TINY_DEEPSEEK, export, write_config


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm")
    config = write_config(tmp, TINY)
    plans = {s: load_plan(export(tmp, config, s, "4090x2")) for s in ("roundpipe", "roundpipe-sync")}
    # one round of all 4 microbatches: one gradient download per layer and iteration, so the run is
    # deterministic (with several, the STEP sums them in arrival order and runs differ in the last bits)
    plans.update({f"{s}-one-round": load_plan(export(tmp, config, s, "4090x2", "--round-size", "4"))
                  for s in ("roundpipe", "roundpipe-sync")})
    return plans


@pytest.mark.parametrize("schedule", ["roundpipe-one-round", "roundpipe-sync-one-round"])
def test_warm_up_changes_no_number(plans, schedule):
    """Every loss and iteration 0's gradients are bit-identical with and without warm-up: the warm-up's
    lr = 0 step leaves weights, moments and the step count exactly as torch's lazy initialisation."""
    plan = plans[schedule]
    model, seq, mb, _ = model_and_shape(plan)
    runs = [run_plan(plan, model, seq, mb, RunOptions(blocks=2, lr=1e-2, capture_grads=True, warmup=w))
            for w in (True, False)]
    assert runs[0].losses == runs[1].losses
    assert len({round(v, 3) for v in runs[1].losses.values()}) > 1  # the optimizer did change the weights
    for layer, grads in runs[1].grads.items():
        for name, g in grads.items():
            assert torch.equal(runs[0].grads[layer][name], g), (layer, name)


def test_warm_host_state_creates_torch_state_and_leaves_weights(plans):
    model, _, _, _ = model_and_shape(plans["roundpipe"])
    layers = build_layers(model)
    before = [{n: p.detach().clone() for n, p in layer.named_parameters()} for layer in layers]
    host = HostParams(layers, torch.float32, pin=False, lag=2)
    assert warm_host_state(host) >= 0
    for layer, opt, old in zip(layers, host.optim, before):
        for name, p in layer.named_parameters():
            state = opt.state[p]
            assert float(state["step"]) == 0.0
            assert not state["exp_avg"].any() and not state["exp_avg_sq"].any()
            assert torch.equal(p.detach(), old[name])
            assert p.grad is host.fp32_grads[(name, p.shape)]
    # one fp32 gradient buffer per parameter name: every decoder layer shares the same ones
    assert len(host.fp32_grads) == len({n for layer in layers for n, _ in layer.named_parameters()})


@pytest.mark.parametrize("schedule", ["roundpipe", "roundpipe-sync"])
def test_pools_are_sized_before_the_run(plans, schedule):
    """The predicted demand is positive for both pools, and a run whose pools were pre-sized allocates
    no more than that pre-sizing plus what the measured order needs beyond the prediction (bounded here
    by one block of downloads, the existing reuse test's bound)."""
    plan = plans[schedule]
    model, seq, mb, _ = model_and_shape(plan)
    host = HostParams(build_layers(model), torch.float32, pin=False, lag=2)
    grads, acts = predicted_pool_demand(plan, host, (mb, seq, model.hidden), torch.float32)
    assert sum(grads.values()) > 0 and sum(acts.values()) > 0
    # no more gradient buffers of a shape are ever in flight than the plan's OFFLOADs download
    offloads = sum(1 for acts_ in plan.lanes.values() for a in acts_ if a.kind == "OFFLOAD")
    assert sum(grads.values()) <= offloads * len(dict(host.layers[1].named_parameters()))
    result = run_plan(plan, model, seq, mb, RunOptions(blocks=1))
    assert result.trace.meta["warmup_s"]["pools"] >= 0


def test_steady_marks_follow_the_warm_up():
    class P:
        optimizer = "async"
        n_iters = 4  # run as blocks of 4: iteration 4 starts a drained pipeline again
    assert steady_iterations(P(), 8, warmed=True) == [1, 2, 3, 5, 6, 7]
    assert steady_iterations(P(), 8, warmed=False) == [2, 3, 5, 6, 7]
    P.optimizer, P.n_iters = "sync", 1  # every sync iteration flushes: blocks are no boundary
    assert steady_iterations(P(), 3, warmed=False) == [1, 2]


def test_trace_marks_steady_iterations_and_helper_uses_them(plans):
    from rpsim.sim.trace import Trace, TraceEvent
    plan = plans["roundpipe"]
    model, seq, mb, _ = model_and_shape(plan)
    result = run_plan(plan, model, seq, mb, RunOptions(blocks=1))
    assert result.trace.meta["steady_iterations"] == list(range(1, plan.n_iters))
    assert set(result.trace.meta["warmup_s"]) == {"host_state", "pools", "kernels"}
    assert result.trace.meta["gc"]["frozen"] and result.trace.meta["gc"]["total_s"] >= 0  # rpexec.gc_pauses
    assert set(result.trace.meta["pool_growth_bytes"]) == {"gradients", "activations"}
    # one row of STEP parts per STEP the trace has, each row's parts inside a STEP span of its iteration
    parts = result.trace.meta["step_parts"]
    steps = [e for e in result.trace.events if e.kind == "STEP"]
    assert sorted(parts["iteration"]) == sorted(e.it for e in steps)
    for i, it in enumerate(parts["iteration"]):
        begin = parts["start_s"][i]
        end = begin + parts["accumulate_s"][i] + parts["adam_s"][i] + parts["refresh_s"][i]
        assert any(e.it == it and e.start_s - 1e-3 <= begin and end <= e.end_s + 1e-3 for e in steps)
    assert all(n >= 1 for n in parts["staged"])
    ends = [1.0, 3.0, 6.0, 10.0]  # spans 2, 3, 4 s
    events = tuple(TraceEvent(0, "compute", f"0F{i}", "F", 0, 0, i, e - 0.5, e) for i, e in enumerate(ends))
    assert steady_iteration_s(Trace(events, {"steady_iterations": [1, 2, 3]})) == pytest.approx(3.0)
    assert steady_iteration_s(Trace(events, {"steady_iterations": [3]})) == pytest.approx(4.0)
    assert steady_iteration_s(Trace(events, {})) == pytest.approx(3.5)  # unmarked: first two spans out


def test_each_kind_of_layer_is_warmed_once(tmp_path):
    """Embedding, one decoder layer per distinct shape (a dense first layer and the MoE layers after
    it are two kinds), head; the first of each, in layer order."""
    for config, picks in ((TINY, [0, 1]), (TINY_DEEPSEEK, [0, 1, 2])):
        plan = load_plan(export(tmp_path, write_config(tmp_path, config), "gpipe", "4090x2"))
        layers = build_layers(model_and_shape(plan)[0])
        assert representative_layers(layers) == picks + [len(layers) - 1]


def _host_and_device(plan):
    model, seq, mb, _ = model_and_shape(plan)
    host = HostParams(build_layers(model), torch.float32, pin=False, lag=2)
    dev = DeviceState(0, torch.device("cpu"))
    dev.skeleton = skeleton_layers(model)
    return host, dev, (mb, seq), model.hidden


def test_kernel_warm_up_touches_no_model_state(plans):
    """The warm-up runs on copies: host weight copies and the fp32 masters stay bit-identical and no
    parameter is left with a gradient."""
    host, dev, shape, hidden = _host_and_device(plans["roundpipe"])
    before = [{n: t.clone() for n, t in c[0].items()} for c in host.copies]
    masters = [{n: p.detach().clone() for n, p in layer.named_parameters()} for layer in host.layers]
    assert warm_kernels(plans["roundpipe"], {0: dev}, host, shape, hidden) > 0
    for copy, saved in zip(host.copies, before):
        assert all(torch.equal(copy[0][n], t) for n, t in saved.items())
    for layer, saved in zip(host.layers, masters):
        for n, p in layer.named_parameters():
            assert torch.equal(p.detach(), saved[n]) and p.grad is None


def test_each_gpu_warms_the_layers_it_runs(tmp_path):
    """RoundPipe's stateless GPUs run every layer; a GPipe GPU only its stage, and one without the
    embedding starts its warm-up from a hidden state. The run's numbers are the same with and without
    the warm-up there too."""
    config = write_config(tmp_path, TINY)
    gpipe = load_plan(export(tmp_path, config, "gpipe", "4090x2"))
    first, second = layers_run_on(gpipe, 0), layers_run_on(gpipe, 1)
    n_layers = TINY["num_hidden_layers"] + 2
    assert first | second == set(range(n_layers)) and not first & second and 0 in first
    host, dev, shape, hidden = _host_and_device(gpipe)
    assert representative_layers(host.layers, second) == [min(second), n_layers - 1]
    warm_kernels(gpipe, {1: dev}, host, shape, hidden)  # GPU 1's layers: no embedding
    model, seq, mb, _ = model_and_shape(gpipe)
    runs = [run_plan(gpipe, model, seq, mb, RunOptions(blocks=2, lr=1e-2, warmup=w)) for w in (True, False)]
    assert runs[0].losses == runs[1].losses


def test_kernel_warm_up_errors_reach_the_caller(plans):
    host, dev, shape, hidden = _host_and_device(plans["roundpipe"])
    dev.skeleton = dev.skeleton[:1]  # no decoder or head module: the warm-up's layer lookup fails
    with pytest.raises(IndexError):
        warm_kernels(plans["roundpipe"], {0: dev}, host, shape, hidden)


def test_no_room_for_the_warm_up_skips_it_with_a_warning(plans, monkeypatch):
    import rpexec.kernel_warmup as kw

    def full(*_args):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(kw, "_warm_device", full)
    host, dev, shape, hidden = _host_and_device(plans["roundpipe"])
    with pytest.warns(UserWarning, match="kernel warm-up skipped on GPU 0"):
        assert warm_kernels(plans["roundpipe"], {0: dev}, host, shape, hidden) >= 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_kernel_warm_up_on_a_gpu_leaves_no_peak(plans):
    """On a GPU the warm-up runs on the compute stream and resets the peak counter: the run's peak is
    the plan's, not the warm-up's."""
    plan = plans["roundpipe"]
    model, seq, mb, _ = model_and_shape(plan)
    host = HostParams(build_layers(model), torch.float16, pin=True, lag=2)
    gpu = torch.device("cuda", 0)
    dev = DeviceState(0, gpu, {"compute": torch.cuda.Stream(device=gpu)})
    dev.skeleton = skeleton_layers(model)
    warm_kernels(plan, {0: dev}, host, (mb, seq), model.hidden)
    assert torch.cuda.max_memory_allocated(gpu) == torch.cuda.memory_allocated(gpu)
