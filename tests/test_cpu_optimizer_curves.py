"""The host STEP's two calibrated curves (rpsim.costs.cpu_optimizer): how much of a tensor stays
cache-resident as it fills more of the cache, and how each rate falls with fewer STEP threads; and
the thread count rpsim gives a plan's STEP (rpsim.costs.optimizer_threads), which is rpexec's."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpsim.catalog.servers import server_from_table
from rpsim.costs.cpu_optimizer import (
    cache_resident_params,
    cpu_optimizer_rates,
    interpolate,
    resident_fractions,
    thread_ratio,
)
from rpsim.costs.optimizer_threads import async_step_threads, plan_step_threads
from rpsim.errors import SpecError
from rpsim.specs import ModelSpec
from tests.host_step_helpers import TINY_MODEL, host_table, tiny_sync_steps

STREAMED, RESIDENT = 5e9, 10e9


def mix_rate(h: float) -> float:
    """A later pass of which h runs resident and 1 - h streams."""
    return 1 / (h / RESIDENT + (1 - h) / STREAMED)


def test_the_resident_fraction_inverts_the_measured_mix():
    points = ((0.25, 12e9), (0.5, RESIDENT), (0.75, mix_rate(0.5)), (0.95, STREAMED))
    fractions = resident_fractions(points, STREAMED, RESIDENT)
    # faster than the probe at a quarter of the cache: clamped to wholly resident
    assert [share for share, _ in fractions] == [0.25, 0.5, 0.75, 0.95]
    assert [h for _, h in fractions] == pytest.approx([1.0, 1.0, 0.5, 0.0], abs=1e-12)
    assert resident_fractions(points, STREAMED, STREAMED) == ()  # no resident gain: no curve


def test_a_tensor_keeps_the_interpolated_fraction_of_its_share_and_none_beyond_the_cache():
    cache = 8 * 1_000_000  # 8 B per parameter: a 1M-parameter tensor fills it
    fractions = ((0.5, 1.0), (0.75, 0.5), (0.95, 0.2))
    tensors = (250_000, 625_000, 750_000, 1_000_000, 1_500_000)  # shares 0.25, 0.625, 0.75, 1.0, 1.5
    expected = 250_000 * 1.0 + 625_000 * 0.75 + 750_000 * 0.5 + 1_000_000 * 0.2 + 0
    assert cache_resident_params(tensors, cache, fractions) == pytest.approx(expected, rel=1e-12)
    assert cache_resident_params(tensors, cache) == 250_000 + 625_000 + 750_000 + 1_000_000  # no curve: all that fit


def test_thread_ratio_is_linear_to_all_cores_and_proportional_below_the_first_point():
    points = ((8.0, 0.5),)
    assert [thread_ratio(points, t, 16) for t in (4, 8, 12, 16, 20)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert thread_ratio((), 3, 16) == 1.0  # nothing measured: the all-core rates
    two = ((8.0, 0.5), (12.0, 0.9))
    assert thread_ratio(two, 10, 16) == pytest.approx(0.7) and thread_ratio(two, 14, 16) == pytest.approx(0.95)


@given(st.lists(st.tuples(st.floats(0.01, 1.0), st.floats(0.0, 1.0)), min_size=1, max_size=6, unique_by=lambda p: p[0]),
       st.floats(0.0, 2.0))
def test_interpolation_stays_within_its_points(points, x):
    points = tuple(sorted(points))
    y = interpolate(points, x)
    assert min(p[1] for p in points) - 1e-12 <= y <= max(p[1] for p in points) + 1e-12


def test_the_host_rates_follow_the_step_threads():
    t = host_table(cores=16, adam_params_per_s=4e9, grad_accumulate_params_per_s=STREAMED,
                    grad_accumulate_resident_params_per_s=RESIDENT, last_level_cache_mib=300.0,
                    optimizer_threads=[{"threads": 8, "adam_params_per_s": 2e9, "grad_accumulate_params_per_s": 4e9,
                                        "grad_accumulate_resident_params_per_s": 5e9}])
    host = server_from_table("h", t, "test").host
    full, twelve = cpu_optimizer_rates(host), cpu_optimizer_rates(host, threads=12)
    assert (full.adam_params_per_s, full.grad_accumulate_params_per_s, full.resident_rate) == (4e9, STREAMED, RESIDENT)
    # halfway between 8 threads and all 16: each rate halfway between its two measurements
    assert twelve.adam_params_per_s == pytest.approx(3e9)
    assert twelve.grad_accumulate_params_per_s == pytest.approx(4.5e9)
    assert twelve.resident_rate == pytest.approx(7.5e9)
    assert cpu_optimizer_rates(host, threads=16) == full


@pytest.mark.parametrize(("host", "message"), [
    ({"grad_accumulate_resident_by_cache_share": [[1.5, 1e9]]}, "share in (0, 1]"),
    ({"grad_accumulate_resident_by_cache_share": [[0.5, 1e9], [0.25, 1e9]]}, "shares must increase"),
    ({"grad_accumulate_resident_by_cache_share": "fast"}, "list of [share, params_per_s] pairs"),
    ({"cores": 16, "optimizer_threads": [{"threads": 16, "adam_params_per_s": 1e9,
                                          "grad_accumulate_params_per_s": 1e9}]}, "threads = 16; must be an integer in 1..15"),
    ({"cores": 16, "optimizer_threads": [{"threads": 8, "adam_params_per_s": 1e9}]}, "grad_accumulate_params_per_s = None"),
    ({"cores": 16, "optimizer_threads": [{"threads": 8, "adam_params_per_s": 1e9, "grad_accumulate_params_per_s": 1e9,
                                          "speed": 2}]}, "unknown key 'speed'"),
    ({"cores": 16, "optimizer_threads": [{"threads": 8, "adam_params_per_s": 1e9, "grad_accumulate_params_per_s": 1e9}] * 2},
     "lists a thread count twice"),
])
def test_bad_curves_name_the_key_and_what_is_valid(host, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        server_from_table("h", host_table(**host), "test")


def test_rpsim_gives_an_async_plan_rpexecs_auto_thread_count_and_a_sync_plan_every_core(tmp_path):
    pytest.importorskip("torch")
    from rpexec.step_threads import step_threads
    from rpsim.ir.planio import load_plan, save_plan
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.scenario import make_scenario
    from rpsim.specs import TrainingSpec
    model = ModelSpec(name="tiny", n_layers=4, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64, mlp_width=512,
                      vocab=1024)
    sc = make_scenario(model, "4090x2", TrainingSpec(seq_len=64, global_batch=8, mb_size=1), None)
    for schedule, async_optimizer in (("roundpipe", True), ("roundpipe-sync", False)):
        plan = make_plan(sc, PlanRequest(schedule))
        save_plan(plan, tmp_path / "p.json")
        lanes = len(load_plan(tmp_path / "p.json").lanes)  # what rpexec counts
        assert plan_step_threads(plan, 16) == step_threads("auto", lanes, 16, 16, "cuda", async_optimizer)
    assert async_step_threads(16, 6) == 11 and async_step_threads(4, 11) == 1


def test_an_async_steps_simulated_time_takes_the_rates_at_its_thread_count(tmp_path):
    """A tiny model on a host whose STEP at the async plan's thread count was measured at half its
    all-core rates: every simulated async STEP takes twice the all-core closed form, a sync STEP does not
    change. No cache: every tensor streams. DRAM far wider than the optimizer's rates."""
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.report.toml_text import toml_text
    from rpsim.scenario import make_scenario
    from rpsim.sim.simulate import simulate
    from rpsim.specs import TrainingSpec
    model = TINY_MODEL
    training = TrainingSpec(seq_len=64, global_batch=8, mb_size=1)
    base = host_table(cores=56, adam_params_per_s=1e7, grad_accumulate_params_per_s=2e7)
    for s in base["sockets"]:
        s["dram_bandwidth_gb_per_s"] = 1e6
    measured = dict(base, host={**base["host"], "optimizer_threads": [
        {"threads": 28, "adam_params_per_s": 5e6, "grad_accumulate_params_per_s": 1e7}]})
    for schedule in ("roundpipe", "roundpipe-sync"):
        durations = []
        for i, table in enumerate((base, measured)):
            path = tmp_path / f"host{i}.toml"
            path.write_text(toml_text(table))
            sc = make_scenario(model, str(path), training, None)
            plan = make_plan(sc, PlanRequest(schedule))
            threads = plan_step_threads(plan, 56)
            steps = [e for e in simulate(plan, sc).trace.events if e.kind == "STEP"]
            durations.append(([e.end_s - e.start_s for e in steps], threads))
        (plain, threads), (slowed, _) = durations
        ratio = thread_ratio(((28.0, 0.5),), threads, 56)
        assert slowed == pytest.approx([d / ratio for d in plain], rel=1e-9)
        assert (ratio < 1) == (schedule == "roundpipe")


def test_simulated_steps_price_the_first_gradient_at_the_widening_rate_and_the_rest_by_residency(tmp_path):
    """A tiny model on a host with a 1 MiB cache, a measured widening rate and a residency curve: its
    256 x 512 MLP tensors fill the cache (share 1.0, h = 0.5 by the curve), its 256 x 256 attention ones
    half of it (h = 1), its embedding and head stream. Every simulated STEP takes the closed form (DRAM far
    wider than the optimizer's rates)."""
    n, steps = tiny_sync_steps(
        tmp_path, adam_params_per_s=1e7, grad_accumulate_params_per_s=2e7, grad_widen_params_per_s=4e7,
        grad_accumulate_resident_params_per_s=5e7, last_level_cache_mib=1.0,
        grad_accumulate_resident_by_cache_share=[[0.5, 5e7], [1.0, 1 / (0.5 / 5e7 + 0.5 / 2e7)]])
    assert steps and n > 1
    for e, layer in steps:
        tensors = layer.optimizer_tensors
        p = sum(tensors)
        mib = 2**20 / 8  # parameters whose gradient + scratch fill the 1 MiB cache
        resident = sum(x * (0.5 if x / mib > 0.5 + 1e-9 else 1.0) for x in tensors if x <= mib)
        expected = p / 1e7 + p / 4e7 + (n - 1) * ((p - resident) / 2e7 + resident / 5e7)
        assert e.end_s - e.start_s == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_search_takes_the_lowered_plans_step_threads_before_lowering(gpus):
    """rpsim.costs.optimizer_threads.streamed_plan_step_threads (search's estimates, before any plan is
    lowered) equals plan_step_threads of the lowered RoundPipe plans, async and sync."""
    from rpsim.costs.optimizer_threads import streamed_plan_step_threads
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.scenario import make_scenario
    from rpsim.specs import TrainingSpec
    model = ModelSpec(name="tiny", n_layers=4, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64, mlp_width=512,
                      vocab=1024)
    sc = make_scenario(model, f"4090x{gpus}", TrainingSpec(seq_len=64, global_batch=8, mb_size=1), None)
    for schedule, async_optimizer in (("roundpipe", True), ("roundpipe-sync", False)):
        plan = make_plan(sc, PlanRequest(schedule))
        assert plan_step_threads(plan, 56) == streamed_plan_step_threads(56, gpus, async_optimizer)


def test_search_estimates_an_async_roundpipe_step_at_its_thread_count(tmp_path):
    """A host whose rates at the async count are half: the fast estimate's async rates are half, its sync
    ones the all-core ones."""
    from rpsim.report.toml_text import toml_text
    from rpsim.scenario import make_scenario
    from rpsim.search.fast_context import context_of
    from rpsim.specs import TrainingSpec
    threads = 56 - 5 * 2  # two GPUs: an optimizer lane and five per GPU
    t = host_table(cores=56, adam_params_per_s=1e9, grad_accumulate_params_per_s=2e9,
                    optimizer_threads=[{"threads": threads, "adam_params_per_s": 5e8, "grad_accumulate_params_per_s": 1e9}])
    path = tmp_path / "host.toml"
    path.write_text(toml_text(t))
    model = ModelSpec(name="tiny", n_layers=4, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64, mlp_width=512,
                      vocab=1024)
    ctx = context_of(make_scenario(model, str(path), TrainingSpec(seq_len=64, global_batch=8, mb_size=1), None))
    assert ctx.cpu.adam_params_per_s == 1e9 and ctx.cpu_async.adam_params_per_s == pytest.approx(5e8)
    assert ctx.cpu.grad_accumulate_params_per_s == 2e9 and ctx.cpu_async.grad_accumulate_params_per_s == pytest.approx(1e9)
