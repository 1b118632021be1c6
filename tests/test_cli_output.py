"""What the tables print: plain numbers with thousands separators, no 'best' line for a single plan, and
the hop delay of `--fidelity hop` derived from the links (and said so) when no profile gives one."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rpsim.catalog import load_model
from rpsim.report.table import format_table
from rpsim.scenario import make_scenario
from rpsim.sim.hop import boundary_bytes, hop_delay
from rpsim.specs import TrainingSpec


def test_large_numbers_have_thousands_separators():
    table = format_table(["plan", "tokens/s", "n"], [["a", 44986.2, 152064], ["b", 2264.3, 8]])
    assert "44,986" in table and "152,064" in table and "2264" in table


@given(st.floats(min_value=1e-4, max_value=1e13) | st.integers(min_value=0, max_value=10**13))
def test_numbers_never_print_in_scientific_notation(value):
    cell = format_table(["x"], [[value]]).splitlines()[-1].strip()
    assert "e" not in cell.lower()
    assert abs(float(cell.replace(",", "")) - value) <= max(1e-4, 0.0006 * abs(value)) + 0.5 * (abs(value) >= 1e4)


def test_compare_prints_tokens_per_s_plainly(run_cli):
    code, out, _ = run_cli("compare", "--model", "qwen3-1.7b", "--gpus", "4090x8", "--fidelity", "ideal",
                           "--schedules", "gpipe,1f1b")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(("gpipe", "1f1b"))]
    tokens = [line.split()[3] for line in rows]
    assert all(int(t.replace(",", "")) >= 10_000 for t in tokens), rows  # large enough to need separators
    assert all("," in t and "e" not in t for t in tokens), rows
    assert "best:" in out


def test_simulate_one_plan_prints_no_best_line(run_cli):
    code, out, _ = run_cli("simulate", "--model", "llama3-8b", "--gpus", "4090x8", "--fidelity", "ideal",
                           "--schedule", "1f1b")
    assert code == 0 and "1f1b" in out
    assert "best" not in out


def _scenario(gpus: str):
    training = TrainingSpec(seq_len=1024, global_batch=8, mb_size=2)
    return make_scenario(load_model("llama3-8b"), gpus, training, None, None)


def test_hop_delay_is_one_boundary_through_host_memory_plus_latency():
    sc = _scenario("4090x2")
    n_bytes = 2 * 1024 * 4096 * 2  # mb tokens x hidden x 2 bytes (bf16)
    assert boundary_bytes(sc) == n_bytes
    link = sc.server.gpu_links[0]
    expected = n_bytes / link.d2h_bytes_per_s + n_bytes / link.h2d_bytes_per_s + 2 * link.latency_s
    hop = hop_delay("hop", sc)
    assert abs(hop.seconds - expected) <= 1e-12 * expected
    assert "derived from the links" in hop.source
    assert hop_delay("pcie", sc).seconds == 0.0 and hop_delay("ideal", sc).seconds == 0.0


def test_hop_delay_uses_peer_to_peer_where_the_server_has_it():
    sc = _scenario("h200x2")
    assert sc.server.p2p != "none"
    n_bytes = boundary_bytes(sc)
    expected = n_bytes / sc.server.p2p_bytes_per_s + sc.server.gpu_links[0].latency_s
    assert abs(hop_delay("hop", sc).seconds - expected) <= 1e-12 * expected


def test_hop_fidelity_reports_and_uses_its_delay(run_cli):
    argv = ("compare", "--model", "llama3-8b", "--gpus", "4090x8", "--schedules", "gpipe", "--seq", "512")
    code, ideal, _ = run_cli(*argv, "--fidelity", "ideal")
    code_hop, hop, _ = run_cli(*argv, "--fidelity", "hop")
    assert code == code_hop == 0
    assert "# hop: " in hop and "derived from the links" in hop and "# hop: " not in ideal
    iteration = {name: float(next(ln for ln in out.splitlines() if ln.startswith("gpipe")).split()[2])
                 for name, out in (("ideal", ideal), ("hop", hop))}
    assert iteration["hop"] > iteration["ideal"]
