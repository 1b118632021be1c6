"""The strided elementwise kernels (RoPE on transposed q and k, GQA's repeat, the layout copies): their
bytes, their price at a calibrated rate, the machine-file field that carries it, and the probe that
measures it (`rpexec calibrate`; benchmarks/notes-strided.md)."""
from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.catalog import load_gpu
from rpsim.catalog.servers import generic_server_table, server_from_table
from rpsim.costs import roofline
from rpsim.costs.gemms import attention_flops, layer_gemms
from rpsim.costs.layer_costs import (
    contiguous_elementwise_bytes,
    strided_elementwise_bytes,
    transformer_layer_cost,
)
from rpsim.errors import SpecError
from rpsim.report.toml_text import toml_text
from rpsim.specs import ModelSpec, TrainingSpec

LLAMA_07B = ModelSpec(name="llama-0.7b", n_layers=12, hidden=2048, n_heads=16, n_kv_heads=4, head_dim=128,
                      mlp_width=5632, vocab=32000)
E03_MB = TrainingSpec(seq_len=2048, global_batch=32, mb_size=4, precision="bf16")


def test_strided_bytes_of_the_traced_layer_are_rope_gqa_and_layout():
    """0.7B at 4 x 2048 tokens: RoPE 18 B over q and k widths (2048 + 512), GQA 4 B over both, the output
    layout copy 4 B over q: 64,512 B per token (notes-strided.md's 528.5 MB)."""
    t = 4 * 2048
    assert strided_elementwise_bytes(LLAMA_07B, E03_MB) == t * (18 * 2560 + 4 * 2560 + 4 * 2048) == 528_482_304
    # norms 2 x 20 B over h, residuals 2 x 6 B over h, SwiGLU 10 B over the MLP width
    assert contiguous_elementwise_bytes(LLAMA_07B, E03_MB, 0) == t * (40 * 2048 + 12 * 2048 + 10 * 5632)


def _gpu(strided: tuple[float, float] | None):
    """The h200 preset with round rates and no kernel floor, so that times are closed forms."""
    return replace(load_gpu("h200"), elementwise_bytes_per_s=4000e9, kernel_floor_s=0.0,
                   strided_elementwise_bytes_per_s=strided)


def _gemm_and_attention_s(gpu, backward: bool) -> float:
    gemms, attn = layer_gemms(LLAMA_07B, E03_MB, 0), attention_flops(LLAMA_07B, E03_MB)
    if backward:
        return (sum(roofline.gemm_backward_time_s(g, gpu, "bf16") for g in gemms)
                + roofline.attention_time_s(2 * attn, gpu, "bf16", True))
    return sum(roofline.gemm_time_s(g, gpu, "bf16") for g in gemms) + roofline.attention_time_s(attn, gpu, "bf16", False)


def test_strided_bytes_are_priced_at_the_strided_rate_forward_and_backward():
    gpu = _gpu((1000e9, 2500e9))
    cost = transformer_layer_cost(LLAMA_07B, E03_MB, gpu, 0)
    contiguous = contiguous_elementwise_bytes(LLAMA_07B, E03_MB, 0)
    strided = strided_elementwise_bytes(LLAMA_07B, E03_MB)
    assert cost.forward_s == pytest.approx(_gemm_and_attention_s(gpu, False) + contiguous / 4000e9 + strided / 1000e9,
                                           rel=1e-12)
    assert cost.backward_s == pytest.approx(
        _gemm_and_attention_s(gpu, True) + 2 * contiguous / 4000e9 + 2 * strided / 2500e9, rel=1e-12)
    assert cost.recompute_s == cost.forward_s
    # against the same GPU without a strided rate, the forward grows by the strided bytes' extra time only
    plain = transformer_layer_cost(LLAMA_07B, E03_MB, _gpu(None), 0)
    assert cost.forward_s - plain.forward_s == pytest.approx(strided / 1000e9 - strided / 4000e9, rel=1e-9)
    assert cost.hbm_bytes == plain.hbm_bytes  # the bytes do not change, only their rate


def test_without_a_strided_rate_figures_are_those_of_one_contiguous_sum():
    """The presets have no strided rate: the layer's elementwise time is all its bytes at the contiguous
    rate, bit for bit what it was before the split (the golden tests pin the rest)."""
    gpu = load_gpu("rtx4090")
    assert gpu.strided_elementwise_bytes_per_s is None
    total = contiguous_elementwise_bytes(LLAMA_07B, E03_MB, 0) + strided_elementwise_bytes(LLAMA_07B, E03_MB)
    cost = transformer_layer_cost(LLAMA_07B, E03_MB, gpu, 0)
    assert cost.forward_s == _gemm_and_attention_s(gpu, False) + roofline.elementwise_time_s(total, gpu, 10)
    assert cost.backward_s == _gemm_and_attention_s(gpu, True) + roofline.elementwise_time_s(2 * total, gpu, 14)


@settings(max_examples=40, deadline=None)
@given(kv_heads=st.sampled_from([1, 2, 4, 8]), rep=st.sampled_from([1, 2, 4]), hidden=st.sampled_from([512, 2048, 4096]),
       seq=st.sampled_from([128, 2048]), slow=st.floats(0.05, 1.0), fast=st.floats(1.0, 3.0))
def test_a_strided_rate_moves_layer_times_in_its_direction_and_equal_rates_move_nothing(
        kv_heads, rep, hidden, seq, slow, fast):
    model = ModelSpec(name="m", n_layers=1, hidden=hidden, n_heads=kv_heads * rep, n_kv_heads=kv_heads,
                      head_dim=64, mlp_width=2 * hidden, vocab=1000)
    train = TrainingSpec(seq_len=seq, global_batch=2, mb_size=2)
    base = transformer_layer_cost(model, train, _gpu(None), 0)
    same = transformer_layer_cost(model, train, _gpu((4000e9, 4000e9)), 0)
    slower = transformer_layer_cost(model, train, _gpu((4000e9 * slow, 4000e9 * slow)), 0)
    faster = transformer_layer_cost(model, train, _gpu((4000e9 * fast, 4000e9 * fast)), 0)
    assert same.forward_s == pytest.approx(base.forward_s, rel=1e-12)
    assert same.backward_s == pytest.approx(base.backward_s, rel=1e-12)
    # Within a last-bit rounding: at a rate equal to the contiguous one the split sum a/r + b/r and the
    # one-sum (a + b)/r may differ by an ulp (hypothesis found slow = 1.0).
    ulp = 1 + 1e-12
    assert slower.forward_s * ulp >= base.forward_s >= faster.forward_s / ulp
    assert slower.backward_s * ulp >= base.backward_s >= faster.backward_s / ulp


def _machine_table(precision: str = "bf16") -> dict:
    t = generic_server_table("h200-sxm", 2)
    t["gpu_calibration"] = {"precision": precision, "elementwise_gb_per_s": 4000.0}
    return t


def test_the_strided_rate_round_trips_through_a_machine_file():
    from rpexec.machine_file import with_strided_elementwise
    probe = {"forward_gb_per_s": 1279.0, "backward_gb_per_s": 2506.0,
             "shapes": [{"shape": "a", "counted_bytes": 10, "forward_us": 1.0, "backward_us": 2.0}]}
    table = with_strided_elementwise(_machine_table(), probe, {"date": "today"})
    read = tomllib.loads(toml_text(table))
    assert read == table
    assert read["calibration"]["strided_elementwise_date"] == "today"
    gpu = server_from_table("m", read, where="m.toml").gpu
    assert gpu.strided_elementwise_bytes_per_s == (1279e9, 2506e9)
    assert gpu.elementwise_bytes_per_s == 4000e9
    # A machine file calibrated without the probe keeps its GPU preset's rate (h200-sxm carries one).
    preset = server_from_table("g", generic_server_table("h200-sxm", 2), where="g.toml").gpu
    assert preset.strided_elementwise_bytes_per_s is not None
    no_probe = server_from_table("m", _machine_table(), where="m.toml").gpu
    assert no_probe.strided_elementwise_bytes_per_s == preset.strided_elementwise_bytes_per_s


@pytest.mark.parametrize("value, message", [([1.0], r"must be \[forward, backward\]"), (2.0, "must be"),
                                            ([1.0, -1.0], "must be a positive number"),
                                            ([1.0, "x"], "must be a positive number")])
def test_a_bad_strided_rate_is_refused_with_its_key(value, message):
    table = _machine_table()
    table["gpu_calibration"]["strided_elementwise_gb_per_s"] = value
    with pytest.raises(SpecError, match=f"strided_elementwise_gb_per_s {message}"):
        server_from_table("m", table, where="m.toml")


def test_calibrate_only_folds_the_cpu_probe_into_a_machine_file(tmp_path, capsys):
    pytest.importorskip("torch")
    from rpexec.cli import main as rpexec_main
    before = tmp_path / "before.toml"
    before.write_text(toml_text(_machine_table("fp32")))
    after = tmp_path / "after.toml"
    code = rpexec_main(["calibrate", "--device", "cpu", "--only", "strided-elementwise", "--update", str(before),
                        "--reps", "1", "-o", str(after)])
    assert code == 0, capsys.readouterr().err
    old, new = tomllib.loads(before.read_text()), tomllib.loads(after.read_text())
    fwd, bwd = new["gpu_calibration"].pop("strided_elementwise_gb_per_s")
    assert fwd > 0 and bwd > 0
    assert {k: v for k, v in new["calibration"].items() if not k.startswith("strided_elementwise_")} == {}
    assert new["calibration"]["strided_elementwise_shapes"][0].startswith("cpu probe layer")
    new.pop("calibration")
    assert new == old  # nothing else moves
    assert server_from_table("m", tomllib.loads(after.read_text()), "m").gpu.strided_elementwise_bytes_per_s == (
        fwd * 1e9, bwd * 1e9)


@pytest.mark.parametrize("args, message", [
    (["--only", "strided-elementwise"], "--only and --update go together"),
    (["--update", "x.toml"], "--only and --update go together"),
    (["--only", "strided-elementwise", "--update", "missing.toml"], "--update 'missing.toml': not a readable"),
    (["--only", "strided-elementwise", "--update", "{before}", "--dtype", "bf16"], "calibrated in fp32"),
])
def test_calibrate_only_refuses_bad_combinations(tmp_path, capsys, monkeypatch, args, message):
    pytest.importorskip("torch")
    from rpexec.cli import main as rpexec_main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "before.toml").write_text(toml_text(_machine_table("fp32")))
    args = [a.replace("{before}", str(tmp_path / "before.toml")) for a in args]
    assert rpexec_main(["calibrate", "--device", "cpu", *args, "-o", str(tmp_path / "out.toml")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.toml").exists()


@pytest.mark.gpu
def test_on_a_gpu_the_strided_kernels_run_below_the_device_copy_rate():
    """The finding the rate models (notes-strided.md: about 1.3 TB/s forward against a 4.2 TB/s copy on an
    H200), measured through rpexec's own functions."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from rpexec.calibrate import device_memory
    from rpexec.strided_probe import strided_elementwise_rates
    dev = torch.device("cuda", 0)
    probe = strided_elementwise_rates(dev, torch.bfloat16, reps=3)
    copy_gb_per_s = device_memory(dev, 3)["memory_bandwidth_gb_per_s"]
    assert 0 < probe["forward_gb_per_s"] < copy_gb_per_s
    assert len(probe["shapes"]) == 2


def test_a_gpu_preset_may_carry_the_strided_rate(monkeypatch):
    """gpus.toml takes the key as a machine file does (the lead folds the measured h200 figure in there)."""
    import rpsim.catalog.gpus as gpus
    real = gpus.preset_table

    def with_rate(name: str) -> dict:
        table = real(name)
        if name != "gpus.toml":
            return table
        return {**table, "h200-sxm": {**table["h200-sxm"], "strided_elementwise_gb_per_s": [1200.0, 2400.0]}}

    monkeypatch.setattr(gpus, "preset_table", with_rate)
    assert gpus.load_gpu("h200").strided_elementwise_bytes_per_s == (1200e9, 2400e9)
    assert gpus.load_gpu("rtx4090").strided_elementwise_bytes_per_s is None
