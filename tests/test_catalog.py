"""--gpus grammar, server presets, TOML topologies and Hugging Face configs, including their error paths."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpsim.catalog import load_model, load_server, server_names
from rpsim.catalog.gpus import gpu_names, resolve_gpu_name
from rpsim.catalog.models import model_from_hf_dict
from rpsim.errors import SpecError

TOPOLOGY = """
gpu = "rtx4090"
p2p = "none"
duplex_factor = 0.6
[host]
cores = 32
dram_gib = 256
adam_params_per_s = 1.5e9
[[sockets]]
name = "s0"
dram_bandwidth_gb_per_s = 80
root_complex_gb_per_s = 90
[[switches]]
name = "plx"
socket = "s0"
uplink_gb_per_s = 25
[[gpus]]
count = 4
attach = "plx"
h2d_efficiency = 0.8
d2h_efficiency = 0.85
"""


@given(gpu=st.sampled_from(["4090", "rtx4090", "3090", "5090", "a100", "a800-80g", "h100", "h200-sxm"]),
       n=st.integers(1, 16))
def test_gpus_grammar_round_trips(gpu, n):
    text = f"{gpu}x{n}"
    server = load_server(text)
    assert server.name == text
    assert server.n_gpus == n
    assert server.gpu.name == resolve_gpu_name(gpu)
    assert load_server(server.name) == server


def test_4090x8_is_dual_socket_without_p2p():
    s = load_server("4090x8")
    assert [s.socket_of(i) for i in range(8)] == ["s0"] * 4 + ["s1"] * 4
    assert s.p2p == "none" and s.inter_socket is not None
    assert 23.9e9 <= s.gpu_links[0].h2d_bytes_per_s <= 26.4e9  # measured range, hardware.md


@pytest.mark.parametrize("name", ["roundpipe-4090x8", "a800x8-nvlink", "h200x2"])
def test_named_servers_load(name):
    s = load_server(name)
    assert s.n_gpus in (2, 8) and s.source


def test_h200x2_matches_its_calibration():
    """The preset carries the figures `rpexec calibrate` measured (experiments/data/machines/h200x2.toml)."""
    s = load_server("h200x2")
    machine = load_server("experiments/data/machines/h200x2.toml")
    assert s.gpu_links[0].h2d_bytes_per_s == pytest.approx(machine.gpu_links[0].h2d_bytes_per_s, rel=0.01)
    assert s.p2p == "nvlink" and s.p2p_bytes_per_s == pytest.approx(machine.p2p_bytes_per_s, rel=0.01)
    assert s.host_dram_bytes_per_s == pytest.approx(machine.host_dram_bytes_per_s, rel=0.01)
    assert s.host.adam_params_per_s == pytest.approx(machine.host.adam_params_per_s, rel=0.01)


def test_toml_topology_with_switch(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(TOPOLOGY)
    s = load_server(str(path))
    assert s.n_gpus == 4 and s.switch_of(0).uplink.bandwidth_bytes_per_s == 25e9 and s.socket_of(3) == "s0"


def test_toml_unknown_key_is_named(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(TOPOLOGY.replace("cores = 32", "cores = 32\ncorez = 4"))
    with pytest.raises(SpecError, match="unknown key 'corez'"):
        load_server(str(path))


def test_toml_inconsistent_links_are_named(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(TOPOLOGY.replace('attach = "plx"', 'attach = "plx2"'))
    with pytest.raises(SpecError, match="plx2"):
        load_server(str(path))
    path.write_text(TOPOLOGY.replace('socket = "s0"', 'socket = "s9"'))
    with pytest.raises(SpecError, match="s9"):
        load_server(str(path))


def test_malformed_and_unknown_gpus():
    with pytest.raises(SpecError, match="<gpu>x<count>"):
        load_server("4090*8")
    with pytest.raises(SpecError, match="nearest match: '4090'"):
        load_server("4091x8")


def test_hf_config_missing_key_is_named():
    config = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100}
    with pytest.raises(SpecError, match="'num_hidden_layers'"):
        model_from_hf_dict(config, "tiny")


def test_hf_config_file_loads(tmp_path):
    config = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": True, "model_type": "qwen3"}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    m = load_model(str(path))
    assert (m.n_layers, m.head_dim, m.n_kv_heads, m.tied_embeddings, m.qk_norm) == (2, 16, 2, True, True)


def test_preset_names_do_not_collide():
    assert not set(server_names()) & set(gpu_names())


def test_model_override_reshapes_and_names_the_change():
    from rpsim.catalog.models import override_model
    m = override_model(load_model("llama3-8b"), "n_layers=4,hidden=512")
    assert (m.n_layers, m.hidden, m.n_heads) == (4, 512, 32)
    assert m.name == "llama3-8b[n_layers=4,hidden=512]"
    with pytest.raises(SpecError, match="unknown field 'layers'"):
        override_model(m, "layers=2")
    with pytest.raises(SpecError, match="needs an integer"):
        override_model(m, "hidden=big")
