"""profile.json overrides per-layer times, scales them by tokens, and rejects unknown keys by JSON path."""
from __future__ import annotations

import json

import pytest

from rpsim.catalog import load_gpu, load_model
from rpsim.costs import model_costs
from rpsim.costs.profile import profile_from_dict
from rpsim.errors import SpecError
from rpsim.specs import TrainingSpec
from rpsim.specs.server import HostSpec


def uniform_profile(n_layers: int, mb_tokens: int, fwd: float = 0.01, bwd: float = 0.02) -> dict:
    layers = [{"name": "embed", "forward_s": 0.0, "backward_s": 0.0}]
    layers += [{"name": f"layer.{i}", "forward_s": fwd, "backward_s": bwd} for i in range(n_layers)]
    layers += [{"name": "head", "forward_s": 0.0, "backward_s": 0.0}]
    return {"format": "rpsim.profile", "version": 1, "conditions": {"mb_tokens": mb_tokens}, "layers": layers}


def test_profile_overrides_and_scales_by_tokens():
    m = load_model("qwen3-1.7b")
    train = TrainingSpec(seq_len=2048, mb_size=2)
    costs = model_costs(m, train, load_gpu("4090"))
    prof = profile_from_dict(uniform_profile(m.n_layers, mb_tokens=2 * train.mb_tokens))
    out = prof.apply(costs)
    assert out.layers[1].forward_s == pytest.approx(0.005)
    assert out.layers[1].recompute_s == pytest.approx(0.005)  # defaults to forward_s
    assert out.layers[1].backward_s == pytest.approx(0.01)
    assert any("scaled linearly" in n for n in out.notes)
    assert out.layers[1].forward_flops == costs.layers[1].forward_flops


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["layers"][1].update(fwd=1), r"\$.layers\[1\]: unknown key 'fwd'"),
    (lambda d: d["layers"][2].pop("backward_s"), r"\$.layers\[2\]: missing key 'backward_s'"),
    (lambda d: d.update(format="x"), r"\$.format"),
    (lambda d: d["layers"][1].update(forward_s="fast"), "non-negative number"),
])
def test_profile_errors_name_the_path(mutate, needle):
    data = uniform_profile(2, 8192)
    mutate(data)
    with pytest.raises(SpecError, match=needle):
        profile_from_dict(data)


def test_profile_layer_count_must_match_model():
    m = load_model("qwen3-1.7b")
    costs = model_costs(m, TrainingSpec(), load_gpu("4090"))
    with pytest.raises(SpecError, match="pipeline layers"):
        profile_from_dict(uniform_profile(3, 8192)).apply(costs)


def test_rpexec_profile_on_cpu_feeds_rpsim_compare(tmp_path, capsys):
    """Issue 8's acceptance: `rpexec profile --device cpu` writes a profile that `rpsim compare --profile`
    accepts; taken at 2 x 16 tokens and used at 4 x 16, the output says the times were scaled."""
    pytest.importorskip("torch")
    from rpexec.cli import main as rpexec_main
    from rpsim.cli.main import main as rpsim_main
    from tests.rpexec_helpers import TINY, write_config
    cfg = write_config(tmp_path, TINY)
    prof = tmp_path / "profile.json"
    assert rpexec_main(["profile", "--model", str(cfg), "--device", "cpu", "--seq", "16", "--mb-size", "2",
                        "--reps", "1", "-o", str(prof)]) == 0
    data = json.loads(prof.read_text())
    assert len(data["layers"]) == TINY["num_hidden_layers"] + 2
    assert data["cpu"]["adam_params_per_s"] > 0 and data["cpu"]["grad_accumulate_params_per_s"] > 0
    assert_layer_steps_price_the_layer(data, cfg)
    capsys.readouterr()
    code = rpsim_main(["compare", "--model", str(cfg), "--gpus", "4090x2", "--seq", "16", "--global-batch", "8",
                       "--mb-size", "4", "--profile", str(prof), "--schedules", "1f1b,roundpipe"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "scaled linearly" in out.out + out.err


def assert_layer_steps_price_the_layer(data: dict, cfg) -> None:
    """The profile times the STEP over the model's own layer at torch's threads (and fewer where the
    machine has them), one entry per thread count, over as many parameters as rpsim counts for that layer;
    rpsim's STEP over the layer is then the measured parts (tests/test_layer_step_profile.py has the rest)."""
    from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
    steps = data["cpu"]["layer_steps"]
    assert steps and len({s["threads"] for s in steps}) == len(steps)  # one layer kind
    layer = model_costs(load_model(str(cfg)), TrainingSpec(seq_len=16, mb_size=2), load_gpu("4090")).layers[1]
    assert steps[0]["params"] == layer.trainable_params
    top = max(steps, key=lambda s: s["threads"])
    host = HostSpec(cores=top["threads"], dram_bytes=1e11, adam_params_per_s=1e9)
    rates = cpu_optimizer_rates(host, profile_from_dict(data), None, top["threads"])
    resident = rates.layer_resident_params(layer.trainable_params, layer.optimizer_tensors)
    assert rates.step_s(layer.trainable_params, 4, resident) == pytest.approx(
        top["adam_refresh_s"] + top["widen_s"] + 3 * top["later_pass_s"])


def test_cpu_optimizer_rates_come_from_the_profile_or_the_byte_ratio():
    from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
    layers = [{"name": "embed", "forward_s": 1.0, "backward_s": 1.0}]
    measured = profile_from_dict({"format": "rpsim.profile", "version": 1, "layers": layers,
                                  "cpu": {"adam_params_per_s": 3e9, "grad_accumulate_params_per_s": 5e9}})
    host = HostSpec(cores=8, dram_bytes=1e11, adam_params_per_s=2e9)
    assert cpu_optimizer_rates(host, measured).grad_accumulate_params_per_s == 5e9
    assert cpu_optimizer_rates(host, measured).adam_params_per_s == 3e9
    derived = cpu_optimizer_rates(host, None)  # 34 B of Adam + refresh against 18 B per accumulation
    assert derived.adam_params_per_s == 2e9 and derived.grad_accumulate_params_per_s == pytest.approx(2e9 * 34 / 18)
    assert derived.step_s(1e9, 3) == pytest.approx(0.5 + 3 * 18 / 34 / 2)
    host_measured = HostSpec(cores=8, dram_bytes=1e11, adam_params_per_s=2e9, grad_accumulate_params_per_s=3e9)
    assert cpu_optimizer_rates(host_measured).grad_accumulate_params_per_s == 3e9


def test_cpu_optimizer_rates_cannot_beat_host_dram():
    """A rate measured over a cache-resident state is capped by DRAM bandwidth / bytes per parameter."""
    from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
    host = HostSpec(cores=8, dram_bytes=1e11, adam_params_per_s=8e9, grad_accumulate_params_per_s=16e9)
    capped = cpu_optimizer_rates(host, None, dram_bytes_per_s=136e9)
    assert capped.adam_params_per_s == pytest.approx(136e9 / 34)
    assert capped.grad_accumulate_params_per_s == pytest.approx(136e9 / 18)
    assert cpu_optimizer_rates(host, None, dram_bytes_per_s=1e13).adam_params_per_s == 8e9
