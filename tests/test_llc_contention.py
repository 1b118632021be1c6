"""DMA through the last-level cache (HostSpec.last_level_cache_bytes_per_s): copies and the cores'
cache-resident passes share the cache max-min, the passes at the 18 B per parameter they move through it;
without the key the topology and the STEP's flows are what they were."""
from __future__ import annotations

import dataclasses

import pytest

from rpexec.machine_file import last_level_cache_gb_per_s
from rpsim.catalog.servers import load_server
from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
from rpsim.sim.sharing import Flow, allocate_rates
from rpsim.sim.topology import OPTIMIZER_RESIDENT, build_topology

CACHED = {"last_level_cache_bytes": 300 * 2**20, "grad_accumulate_params_per_s": 5e9,
          "grad_accumulate_resident_params_per_s": 9.5e9}


def server(llc_gb_per_s: float | None):
    s = load_server("h200x1")
    return dataclasses.replace(s, host=dataclasses.replace(
        s.host, **CACHED, last_level_cache_bytes_per_s=llc_gb_per_s * 1e9 if llc_gb_per_s else None))


def test_without_the_key_nothing_crosses_a_cache():
    topo = build_topology(server(None), None, 11)
    assert not any(r.startswith("llc:") for r in topo.capacity_bytes_per_s)
    assert all(p[0].startswith("dram:") for paths in topo.optimizer_paths for p in paths)
    rates = cpu_optimizer_rates(server(None).host, None, None, 11)
    assert rates.phase_bytes(1e8, 8, 1e8)[2] == 7 * 1e8 * 2.0  # a resident pass: 2 B per parameter from DRAM


def test_copies_and_resident_passes_share_the_cache_max_min():
    """The measured case: a resident pass alone at 9.5e9 params/s (171 GB/s through the cache) beside H2D +
    D2H copies; with the capacity the calibration derives (the pass beside the copies + the copies), the
    pass gets what the copies leave."""
    s = server(190.0)
    topo = build_topology(s, None, None)
    cap = topo.capacity_bytes_per_s
    assert cap["llc:s0"] == pytest.approx(190e9)
    h2d, d2h = topo.h2d_paths[0][0], topo.d2h_paths[0][0]
    assert "llc:s0" in h2d and "llc:s0" in d2h
    resident_path = topo.optimizer_paths[2][0]
    assert resident_path == ("llc:s0", OPTIMIZER_RESIDENT)
    alone = allocate_rates([Flow("pass", resident_path, 1)], cap, topo.duplex_pairs, topo.duplex_factor)["pass"]
    beside = allocate_rates([Flow("pass", resident_path, 1), Flow("h", h2d, 1), Flow("d", d2h, 1)], cap,
                            topo.duplex_pairs, topo.duplex_factor)
    assert alone == pytest.approx(9.5e9 * 18)
    copies = beside["h"] + beside["d"]
    assert beside["pass"] == pytest.approx(190e9 - copies)  # the copies ask less than a fair share
    copies_alone = allocate_rates([Flow("h", h2d, 1), Flow("d", d2h, 1)], cap, topo.duplex_pairs,
                                  topo.duplex_factor)
    assert copies == pytest.approx(copies_alone["h"] + copies_alone["d"])


def test_a_resident_pass_carries_its_cache_bytes_where_the_cache_is_modelled():
    rates = cpu_optimizer_rates(server(190.0).host, None, None, None)
    resident = rates.phase_bytes(1e8, 8, 1e8)[2]
    assert resident == 7 * 1e8 * 18.0
    assert rates.resident_accumulate_bytes_per_s == pytest.approx(rates.resident_rate * 18.0)
    assert rates.step_s(1e8, 8, 1e8) == cpu_optimizer_rates(server(None).host, None, None, None).step_s(1e8, 8, 1e8)


@pytest.mark.parametrize("beside, copies, expected", [
    (5.8e9, 88.0, 5.8e9 * 18 / 1e9 + 88.0),  # slowed beside the copies: what the two moved together
    (9.5e9, 88.0, 9.5e9 * 18 / 1e9 + 88.0),  # not slowed: the cache never bound (the sum bounds nothing)
    (1.0e9, 10.0, 9.5e9 * 18 / 1e9),  # less than the passes alone moved: those bound it from below
])
def test_the_calibrated_capacity(beside, copies, expected):
    got = last_level_cache_gb_per_s({"alone_params_per_s": 9.5e9, "beside_params_per_s": beside,
                                     "copies_gb_per_s": copies})
    assert got == pytest.approx(expected)
