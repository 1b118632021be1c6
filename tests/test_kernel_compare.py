"""benchmarks/kernel_compare.py on a hand-made trace: the compute stream is the one with the most kernel
time, busy time is the union of its kernels (overlaps counted once), the window keeps the trace's last
seconds, and families come from kernel names."""
from __future__ import annotations

import gzip
import json

from benchmarks.kernel_compare import family, gap_classes, main, summarise, union_us


def kernel(ts, dur, name, stream=7, device=0, cat="kernel"):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": device, "tid": stream,
            "args": {"device": device, "stream": stream}}


def test_union_counts_overlaps_once():
    assert union_us([(0, 10), (5, 15), (20, 30)]) == 25
    assert union_us([]) == 0


def test_gaps_by_size_class():
    gaps = gap_classes([(0, 10), (15, 30), (25, 40), (140, 150), (5150, 5200)])
    assert gaps == {"<20us": [1, 5], "20-200us": [1, 100], "0.2-2ms": [0, 0.0], ">2ms": [1, 5000]}


def test_families_from_names():
    assert family("sm90_xmma_gemm_f16f16_f16f32") == "gemm"
    assert family("nvjet_hsh_128x256") == "gemm"
    assert family("pytorch_flash::flash_fwd_kernel") == "attention"
    assert family("void at::native::vectorized_elementwise_kernel<4, ...>") == "elementwise"
    assert family("void at::native::reduce_kernel<512, 1>") == "reduce"
    assert family("something_new") == "other"


def test_window_compute_stream_and_busy():
    events = [kernel(0, 100, "gemm_a"), kernel(1_000_000, 300, "gemm_a"), kernel(1_000_200, 200, "flash_fwd"),
              kernel(1_000_000, 50, "elementwise_x", stream=9), kernel(1_000_000, 400, "copy", cat="gpu_memcpy")]
    gpus, window_s = summarise(events, 0.5)  # the last 0.5 s: the first kernel is outside
    g = gpus[0]
    assert window_s == 0.5
    assert g.busy_us == 400  # 300 and 200 overlapping by 100 on stream 7; stream 9 is not the compute stream
    assert g.kernels == 2 and g.by_family_us == {"gemm": 300, "attention": 200}
    assert g.copy_us == {"copy": 400}


def test_cli_compares_two_traces_and_rejects_an_empty_one(tmp_path, capsys):
    a, b, empty = tmp_path / "a.json.gz", tmp_path / "b.json", tmp_path / "e.json"
    with gzip.open(a, "wt") as f:
        json.dump({"traceEvents": [kernel(0, 1000, "gemm_a"), kernel(2000, 1000, "gemm_a")]}, f)
    b.write_text(json.dumps([kernel(0, 3000, "gemm_a")]))
    empty.write_text(json.dumps({"traceEvents": []}))
    assert main([str(a), f"{b}@1", "--per", "1"]) == 0
    out = capsys.readouterr().out
    assert "compute stream busy 2.0 ms" in out and "compute stream busy 3.0 ms" in out
    assert main([str(empty)]) == 2
    assert "no CUDA kernel" in capsys.readouterr().err


def test_kernels_beside_the_compute_stream_are_counted_apart():
    events = [kernel(0, 300, "gemm_a"), kernel(100, 50, "elementwise_x", stream=9)]
    g = summarise(events, None)[0][0]
    assert g.other_streams_us == {"elementwise": 50} and g.by_family_us == {"gemm": 300}


def test_compact_rows_read_back_as_the_chrome_events(tmp_path):
    from benchmarks.kernel_compare import load_events
    from benchmarks.kernel_trace import compact_rows
    chrome = [kernel(0, 300, "gemm_a"), kernel(10, 40, "copy", cat="gpu_memcpy"),
              {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 5, "pid": 1, "tid": 1}]
    path = tmp_path / "k.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(compact_rows(chrome), f)
    back = load_events(str(path))
    assert [(e["ts"], e["dur"], e["cat"], e["name"], e["args"]) for e in back] == [
        (e["ts"], e["dur"], e["cat"], e["name"], e["args"]) for e in chrome[:2]]
