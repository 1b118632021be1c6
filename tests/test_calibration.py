"""Machine calibration: the GEMM rate table, the machine file rpexec calibrate writes and rpsim reads, and
the host optimizer's DRAM traffic shared with DMA copies (issue 14)."""
from __future__ import annotations

import math
import os
import tomllib

import pytest
import simpy
from hypothesis import given
from hypothesis import strategies as st

from rpsim.catalog.servers import load_server, server_from_table
from rpsim.costs import roofline
from rpsim.costs.gemms import Gemm
from rpsim.errors import SpecError
from rpsim.report.toml_text import toml_text
from rpsim.sim.network import FlowNetwork
from rpsim.specs.gemm_table import GemmRateTable

GRID = [[m, n, k, float(m + n + k) / 1000] for m in (256, 1024) for n in (512, 2048) for k in (512, 2048)]


def test_gemm_table_is_exact_on_grid_points_and_trilinear_in_log2_between():
    table = GemmRateTable.from_points(GRID)
    assert table.rate_flops_per_s(1024, 512, 2048) == pytest.approx((1024 + 512 + 2048) / 1000 * 1e12)
    # log2 midpoints of every axis: the mean of the eight corners
    mid = table.rate_flops_per_s(512, 1024, 1024)
    assert mid == pytest.approx(sum(r[3] for r in GRID) / 8 * 1e12)
    # clamped outside the grid
    assert table.rate_flops_per_s(10, 10, 10) == pytest.approx((256 + 512 + 512) / 1000 * 1e12)
    assert table.rate_flops_per_s(1e6, 1e6, 1e6) == pytest.approx((1024 + 2048 + 2048) / 1000 * 1e12)


@given(st.floats(200, 2000), st.floats(400, 3000), st.floats(400, 3000))
def test_gemm_table_interpolation_stays_within_its_corner_rates(m, n, k):
    table = GemmRateTable.from_points(GRID)
    rate = table.rate_flops_per_s(m, n, k)
    rates = [r[3] * 1e12 for r in GRID]
    assert min(rates) * (1 - 1e-12) <= rate <= max(rates) * (1 + 1e-12)


def test_gemm_table_rejects_a_partial_grid_and_bad_rates():
    with pytest.raises(SpecError, match="full m x n x k grid"):
        GemmRateTable.from_points(GRID[:-1])
    with pytest.raises(SpecError, match="finite and > 0"):
        GemmRateTable.from_points([[1, 1, 1, 0.0]])


def test_backward_gemms_are_timed_at_their_own_shapes():
    """dX = dY W^T is (m, k, n); dW = X^T dY is (k, n, m): a table that is slow for a small m makes the
    weight gradient (whose inner dimension is m) slow, not the input gradient."""
    from dataclasses import replace

    from rpsim.catalog import load_gpu
    slow_small_k = [[m, n, k, 1.0 if k <= 256 else 100.0] for m in (256, 4096) for n in (256, 4096)
                    for k in (256, 4096)]
    gpu = replace(load_gpu("h200"), gemm_tables=(("bf16", GemmRateTable.from_points(slow_small_k)),))
    g = Gemm("w", m=256, n=4096, k=4096)
    forward = roofline.gemm_time_s(g, gpu, "bf16")
    backward = roofline.gemm_backward_time_s(g, gpu, "bf16")
    wgrad = 2.0 * 256 * 4096 * 4096 / 1e12  # (k=4096, n=4096, m=256) at 1 TFLOP/s
    assert forward == pytest.approx(2.0 * 256 * 4096 * 4096 / 100e12)
    assert backward == pytest.approx(forward + wgrad)


def test_toml_text_round_trips_through_tomllib():
    table = {"gpu": "h200", "n": 2, "f": 0.5, "ok": True, "s": 'quote " and \\ back',
             "host": {"cores": 32, "rates": [1.5, 2.0]}, "sockets": [{"name": "s0"}, {"name": "s1"}],
             "cal": {"grid": [[1, 2, 3, 4.5]], "nested": {"x": 1}}}
    assert tomllib.loads(toml_text(table)) == table
    with pytest.raises(ValueError):
        toml_text({"x": math.inf})


def test_machine_file_sections_override_the_gpu_preset():
    base = load_server("h200x2")
    from rpsim.catalog.servers import generic_server_table
    t = generic_server_table("h200-sxm", 2)
    t["host"]["grad_accumulate_params_per_s"] = 3e9
    t["gpu_calibration"] = {"precision": "bf16", "elementwise_gb_per_s": 4000.0, "kernel_floor_us": 7.5,
                            "attention_tflops": [400.0, 200.0], "gemm_tflops": GRID}
    t["calibration"] = {"date": "today", "anything": [1, 2]}
    server = server_from_table("m", tomllib.loads(toml_text(t)), where="m.toml")
    assert server.gpu.elementwise_bytes_per_s == 4000e9 and server.gpu.kernel_floor_s == pytest.approx(7.5e-6)
    assert server.gpu.gemm_table("fp16") is not None  # one tensor-core rate for bf16 and fp16
    assert server.gpu.attention_flops_per_s("bf16") == (400e12, 200e12)
    assert server.host.grad_accumulate_params_per_s == 3e9
    assert base.gpu.elementwise_bytes_per_s != 4000e9
    t["gpu_calibration"]["bogus"] = 1
    with pytest.raises(SpecError, match="unknown key 'bogus'"):
        server_from_table("m", t, where="m.toml")


def test_the_shipped_device_calibration_loads_as_a_server():
    server = load_server("experiments/data/machines/h200x2.toml")
    assert server.n_gpus == 2 and server.gpu.gemm_table("bf16") is not None
    assert server.host.grad_accumulate_params_per_s > 0


def test_rpexec_calibrate_on_cpu_writes_a_machine_file_rpsim_takes(tmp_path, capsys):
    pytest.importorskip("torch")
    from rpexec.calibrate import reduced_thread_counts
    from rpexec.cli import main as rpexec_main
    from rpexec.profile import RESIDENT_CURVE_SHARES
    from rpsim.cli.main import main as rpsim_main
    out = tmp_path / "machine.toml"
    code = rpexec_main(["calibrate", "--device", "cpu", "--gpu", "rtx4090", "--reps", "1",
                        "--dram-test-mib", "16", "-o", str(out), "--raw", str(tmp_path / "raw.json")])
    assert code == 0, capsys.readouterr().err
    data = tomllib.loads(out.read_text())
    assert data["gpu_calibration"]["precision"] == "fp32" and len(data["gpu_calibration"]["gemm_tflops"]) == 8
    assert data["calibration"]["links_measured"] is False
    fwd, bwd = data["gpu_calibration"]["strided_elementwise_gb_per_s"]  # rpexec.strided_probe, on the CPU
    assert fwd > 0 and bwd > 0 and data["calibration"]["strided_elementwise_shapes"][0].startswith("cpu probe")
    assert data["host"]["adam_params_per_s"] > 0 and data["sockets"][0]["dram_bandwidth_gb_per_s"] > 0
    # the cache-resident accumulation: measured over tensors that fit this host's cache, a later pass at
    # least as fast as a streamed one once rpsim reads it (rpsim.costs.cpu_optimizer)
    assert data["host"]["grad_accumulate_resident_params_per_s"] > 0 and data["host"]["last_level_cache_mib"] > 0
    probe = data["calibration"]["optimizer_resident_probe"]
    assert 8 * probe["tensor_params"] <= probe["cache_bytes"] and probe["step_8_staged_s"] > probe["step_1_staged_s"]
    # the residency curve: one rate per share of the cache, the half-cache one the probe's own
    curve = data["host"]["grad_accumulate_resident_by_cache_share"]
    assert [share for share, _ in curve] == list(RESIDENT_CURVE_SHARES) and all(rate > 0 for _, rate in curve)
    assert dict(curve)[0.5] == data["host"]["grad_accumulate_resident_params_per_s"]
    # the STEP again at fewer threads than cores, where the machine has more than one core
    counts = [row["threads"] for row in data["host"].get("optimizer_threads", [])]
    assert counts == reduced_thread_counts(os.cpu_count() or 1)
    for row in data["host"].get("optimizer_threads", []):
        assert row["adam_params_per_s"] > 0 and row["grad_accumulate_params_per_s"] > 0
    capsys.readouterr()
    assert rpsim_main(["compare", "--model", "qwen3-1.7b", "--gpus", str(out), "--seq", "512",
                       "--global-batch", "8", "--schedules", "1f1b", "--precision", "fp32"]) in (0, 1)
    assert "1f1b" in capsys.readouterr().out


def test_rpexec_calibrate_refuses_cpu_without_a_gpu_preset(tmp_path, capsys):
    pytest.importorskip("torch")
    from rpexec.cli import main as rpexec_main
    assert rpexec_main(["calibrate", "--device", "cpu", "-o", str(tmp_path / "m.toml")]) == 2
    assert "--gpu is required" in capsys.readouterr().err
    assert not (tmp_path / "m.toml").exists()


def _step_time(dma_flows: int) -> float:
    """A host optimizer phase of 100 GB over a 100 GB/s DRAM with a 80 GB/s optimizer cap, beside
    `dma_flows` endless copies each capped at 30 GB/s by their own link."""
    env = simpy.Environment()
    caps = {"dram:s0": 100e9, "host.optimizer.adam": 80e9, **{f"g{i}.h2d": 30e9 for i in range(dma_flows)}}
    net = FlowNetwork(env, caps)
    for i in range(dma_flows):
        net.transfer(("dram:s0", f"g{i}.h2d"), 1e15, priority=1)
    done = net.transfer(("dram:s0", "host.optimizer.adam"), 100e9, priority=1)
    env.run(until=done)
    return env.now


def test_the_host_step_shares_dram_max_min_with_dma_copies():
    assert _step_time(0) == pytest.approx(100e9 / 80e9)  # its own cap binds
    assert _step_time(1) == pytest.approx(100e9 / 70e9)  # the copy takes its 30, the step the rest
    assert _step_time(3) == pytest.approx(100e9 / 25e9)  # four flows share 100 GB/s evenly


def test_host_issue_splits_a_stage_into_interpreter_and_engine_work():
    from rpsim.sim.host_issue import host_issue_s
    issue = ((1.0, 2.0, 5.0), (10.0, 20.0, 50.0), (100.0, 200.0, 500.0))  # embed, layer, head
    # layers 0 (embed), 1, 2 (transformer) of a 5-layer pipeline (head = 4)
    assert host_issue_s(issue, 0, 3, 5, "F", recompute=True) == (1.0 + 10 + 10, 0.0)
    assert host_issue_s(issue, 0, 3, 5, "F", recompute=False) == (2.0 + 20 + 20, 0.0)
    assert host_issue_s(issue, 3, 5, 5, "B", recompute=True) == (20.0 + 200, 30.0 + 300)
    assert host_issue_s(issue, 3, 5, 5, "B", recompute=False) == (0.0, 30.0 + 300)
    assert host_issue_s(issue, 3, 5, 5, "FB", recompute=True) == (20.0 + 200, 30.0 + 300)
    assert host_issue_s(issue, 3, 5, 5, "I", recompute=True) == (220.0, 165.0)
    assert host_issue_s(issue, 3, 5, 5, "W", recompute=True) == (0.0, 165.0)


def test_two_gpus_issuing_at_once_share_the_interpreter(tmp_path):
    """With issue far above device time, each GPU's forward alone takes its interpreter seconds; two
    forwards issued at once each get half the interpreter, so they take twice as long (max-min)."""
    from rpsim.catalog.servers import generic_server_table
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.scenario import make_scenario
    from rpsim.sim.simulate import simulate
    from rpsim.specs import ModelSpec, TrainingSpec
    t = generic_server_table("h200-sxm", 2)
    t["host"]["issue_us"] = {"embed": [0, 0, 0], "layer": [1e6, 1e6, 2e6], "head": [0, 0, 0]}  # 1 s a layer
    path = tmp_path / "slow-host.toml"
    path.write_text(toml_text(t))
    model = ModelSpec(name="tiny", n_layers=2, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64, mlp_width=512,
                      vocab=1024)
    sc = make_scenario(model, str(path), TrainingSpec(seq_len=64, global_batch=4, mb_size=1), None)
    trace = simulate(make_plan(sc, PlanRequest("gpipe")), sc).trace
    forwards = sorted((e for e in trace.events if e.kind == "F"), key=lambda e: (e.start_s, e.gpu))
    alone = forwards[0]  # GPU 0, microbatch 0: nothing else issues yet
    assert alone.end_s - alone.start_s == pytest.approx(1.0, rel=1e-6)
    overlapping = [e for e in forwards if e.gpu == 1 and e.mb == 0]
    g0_next = [e for e in forwards if e.gpu == 0 and e.mb == 1]
    # GPU 1 starts after the activation's 10 us P2P hop; from then on the two share the interpreter
    assert overlapping and g0_next and overlapping[0].start_s == pytest.approx(g0_next[0].start_s, abs=1e-4)
    assert g0_next[0].end_s - g0_next[0].start_s == pytest.approx(2.0, abs=1e-4)
    assert overlapping[0].end_s == pytest.approx(g0_next[0].end_s, abs=1e-9)
