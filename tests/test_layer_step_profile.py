"""The STEP timed over the model's own layer (`rpexec profile`'s cpu.layer_steps) prices that layer's host
optimizer step in rpsim: exactly the measured parts at the measured thread counts, interpolated between
them, and through the cache-residency model when the host has a measured resident rate."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
from rpsim.costs.profile import profile_from_dict
from rpsim.errors import SpecError
from rpsim.specs.server import HostSpec

P = 100_000_000  # the measured layer's parameters
LAYERS = [{"name": "embed", "forward_s": 1.0, "backward_s": 1.0}]


def profile(steps: list[dict], accumulate: float = 5e9):
    return profile_from_dict({"format": "rpsim.profile", "version": 1, "layers": LAYERS,
                              "cpu": {"adam_params_per_s": 4e9, "grad_accumulate_params_per_s": accumulate,
                                      "grad_widen_params_per_s": 9e9, "layer_steps": steps}})


def step(threads: int, adam: float, widen: float, later: float, params: float = P) -> dict:
    return {"layer": "layer.0", "params": params, "threads": threads, "adam_refresh_s": adam, "widen_s": widen,
            "later_pass_s": later, "n_staged": 8}


HOST = HostSpec(cores=16, dram_bytes=1e11, adam_params_per_s=2e9)  # no cache, no resident rate, no thread curve
TWO_COUNTS = [step(16, 0.030, 0.015, 0.012), step(8, 0.045, 0.020, 0.020)]


@pytest.mark.parametrize("n_staged", [1, 2, 8])
def test_the_measured_layer_steps_in_its_measured_parts(n_staged):
    rates = cpu_optimizer_rates(HOST, profile(TWO_COUNTS), None, 16)
    resident = rates.layer_resident_params(P, [P / 2, P / 2])
    assert resident == P  # no measured resident rate: the layer's own pass is the resident rate
    assert rates.step_s(P, n_staged, resident) == pytest.approx(0.030 + 0.015 + (n_staged - 1) * 0.012)


def test_between_thread_counts_each_rate_is_linear_in_threads():
    rates = cpu_optimizer_rates(HOST, profile(TWO_COUNTS), None, 12)
    halfway = [(P / 0.030 + P / 0.045) / 2, (P / 0.015 + P / 0.020) / 2, (P / 0.012 + P / 0.020) / 2]
    expected = P / halfway[0] + P / halfway[1] + 7 * P / halfway[2]
    assert rates.step_s(P, 8, rates.layer_resident_params(P, [P])) == pytest.approx(expected)
    below = cpu_optimizer_rates(HOST, profile(TWO_COUNTS), None, 4)  # half the lowest count: half its rates
    assert below.step_s(P, 8, below.layer_resident_params(P, [P])) == pytest.approx(2 * (0.045 + 0.020 + 7 * 0.020))
    above = cpu_optimizer_rates(HOST, profile(TWO_COUNTS), None, 64)  # held at the most threads measured
    assert above.step_s(P, 8, above.layer_resident_params(P, [P])) == pytest.approx(0.030 + 0.015 + 7 * 0.012)


def test_without_a_host_thread_curve_the_streamed_rate_follows_the_layer():
    full = cpu_optimizer_rates(HOST, profile(TWO_COUNTS), None, 16)
    eight = cpu_optimizer_rates(HOST, profile(TWO_COUNTS), None, 8)
    assert eight.grad_accumulate_params_per_s == pytest.approx(full.grad_accumulate_params_per_s * 0.012 / 0.020)


CACHED = HostSpec(cores=16, dram_bytes=1e11, adam_params_per_s=2e9, grad_accumulate_params_per_s=5e9,
                  grad_accumulate_resident_params_per_s=12e9, last_level_cache_bytes=300 * 2**20)


@given(later_rate=st.floats(5e9, 12e9))
def test_a_measured_pass_between_the_streamed_and_resident_rates_is_reproduced(later_rate):
    """With a host resident rate r_1, the layer keeps R = (P/r_0 - z) / (1/r_0 - 1/r_1) resident, so a
    lone STEP takes what the profile measured."""
    later_s = P / later_rate
    rates = cpu_optimizer_rates(CACHED, profile([step(16, 0.03, 0.015, later_s)]), None, 16)
    resident = rates.layer_resident_params(P, [P])
    assert 0 <= resident <= P
    assert rates.step_s(P, 8, resident) == pytest.approx(0.03 + 0.015 + 7 * later_s, rel=1e-9)


def test_a_pass_outside_the_two_rates_is_clamped():
    slow = cpu_optimizer_rates(CACHED, profile([step(16, 0.03, 0.015, P / 4e9)]), None, 16)
    assert slow.layer_resident_params(P, [P]) == 0  # slower than streamed: nothing resident, priced streamed
    fast = cpu_optimizer_rates(CACHED, profile([step(16, 0.03, 0.015, P / 20e9)]), None, 16)
    assert fast.layer_resident_params(P, [P]) == P  # faster than the host's resident probe: all resident,
    assert fast.step_s(P, 8, P) == pytest.approx(0.03 + 0.015 + 7 * P / 20e9)  # at the layer's own rate


def test_other_layers_keep_the_cache_model():
    rates = cpu_optimizer_rates(CACHED, profile([step(16, 0.03, 0.015, P / 8e9)]), None, 16)
    small = 1_000_000  # fits the cache: wholly resident without a measured curve
    assert rates.layer_resident_params(3 * small, [small, small, small]) == 3 * small
    assert rates.layer_resident_params(10**9, [10**9]) == 0  # an embedding far beyond the cache streams


@pytest.mark.parametrize("mutate, needle", [
    (lambda s: s.pop("later_pass_s"), r"layer_steps\[0\]: missing key 'later_pass_s'"),
    (lambda s: s.update(threads=0), r"layer_steps\[0\].threads: expected a positive integer"),
    (lambda s: s.update(widen_s=0), "must be positive"),
    (lambda s: s.update(speed=1), "unknown key 'speed'"),
])
def test_layer_step_errors_name_the_path(mutate, needle):
    entry = step(16, 0.03, 0.015, 0.012)
    mutate(entry)
    with pytest.raises(SpecError, match=needle):
        profile([entry])


def test_a_host_step_only_profile_leaves_the_layers_to_the_cost_model():
    """No `layers`, only cpu.layer_steps: accepted, the layers keep the cost model's times, the STEP is the
    layer's; without layer_steps a profile still needs its layers."""
    from rpsim.catalog import load_gpu, load_model
    from rpsim.costs import model_costs
    from rpsim.specs import TrainingSpec
    data = {"format": "rpsim.profile", "version": 1, "cpu": {"layer_steps": [step(16, 0.03, 0.015, 0.012)]}}
    prof = profile_from_dict(data)
    assert prof.layers == ()
    costs = model_costs(load_model("qwen3-1.7b"), TrainingSpec(), load_gpu("4090"))
    assert prof.apply(costs) is costs
    rates = cpu_optimizer_rates(HOST, prof, None, 16)
    assert rates.step_s(P, 8, rates.layer_resident_params(P, [P])) == pytest.approx(0.03 + 0.015 + 7 * 0.012)
    with pytest.raises(SpecError, match=r"\$.layers: required.*only a profile of the host STEP"):
        profile_from_dict({"format": "rpsim.profile", "version": 1, "cpu": {"adam_params_per_s": 1e9}})


def test_rpexec_profile_host_step_only_feeds_rpsim(tmp_path, capsys):
    """`rpexec profile --host-step-only` times the STEP alone (no layers, no links); `rpsim compare
    --profile` takes it beside any server."""
    pytest.importorskip("torch")
    import json

    from rpexec.cli import main as rpexec_main
    from rpsim.cli.main import main as rpsim_main
    from tests.rpexec_helpers import TINY, write_config
    cfg = write_config(tmp_path, TINY)
    path = tmp_path / "step.json"
    assert rpexec_main(["profile", "--model", str(cfg), "--device", "cpu", "--host-step-only", "--reps", "1",
                        "-o", str(path)]) == 0
    data = json.loads(path.read_text())
    assert "layers" not in data and "links" not in data and data["cpu"]["layer_steps"]
    capsys.readouterr()
    assert rpsim_main(["compare", "--model", str(cfg), "--gpus", "h200x1", "--seq", "16", "--global-batch", "8",
                       "--mb-size", "4", "--profile", str(path), "--schedules", "roundpipe-sync"]) == 0
