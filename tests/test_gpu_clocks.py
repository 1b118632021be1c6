"""benchmarks/gpu_clocks.py: nvidia-smi's samples parsed, the set-up's idle samples left out, and the
software power cap's share counted."""
from __future__ import annotations

from benchmarks.gpu_clocks import parse_samples, sampling_clocks, summarise

SMI = """0, 345, 80.1, 0x0000000000000001
1, 345, 81.0, 0x0000000000000001
0, 1650, 690.0, 0x0000000000000004
1, 1700, 684.0, 0x0000000000000004
0, 1980, 400.0, 0x0000000000000000
1, [N/A], 500.0, 0x0
0, 1700, 6"""


def test_parse_keeps_only_whole_lines():
    s = parse_samples(SMI)
    assert s[0] == [(345.0, 80.1, 1), (1650.0, 690.0, 4), (1980.0, 400.0, 0)]
    assert s[1] == [(345.0, 81.0, 1), (1700.0, 684.0, 4)]


def test_summary_over_working_samples():
    out = summarise(parse_samples(SMI))
    assert out["0"] == {"sm_mhz": 1815.0, "power_w": 545.0, "power_capped": 0.5, "samples": 2}
    assert out["1"] == {"sm_mhz": 1700.0, "power_w": 684.0, "power_capped": 1.0, "samples": 1}


def test_no_nvidia_smi_leaves_the_result_alone(monkeypatch):
    monkeypatch.setattr("benchmarks.gpu_clocks.shutil.which", lambda _: None)
    result: dict = {}
    with sampling_clocks(result):
        pass
    assert result == {}
