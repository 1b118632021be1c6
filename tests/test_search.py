"""`rpsim search` end to end: the exported best plan reproduces the reported iteration time exactly, the
ranking is deterministic (and the same on one process, two, or a Dask cluster), the output has the
ranking and the frontier, bad flags exit 2, and 'nothing fits' exits 1 with the nearest alternatives."""
from __future__ import annotations

import json

import pytest

from rpsim.scenario import make_scenario
from rpsim.search.run import SearchOptions, search
from rpsim.search.space import enumerate_candidates
from rpsim.search.workspace import Workspace
from rpsim.specs import TrainingSpec

SMALL = ("--model", "qwen3-1.7b", "--gpus", "4090x8", "--global-batch", "32", "--budget", "600",
         "--confirm", "2", "--jobs", "1")
QUICK = SearchOptions(budget=600, top_k=2, frontier_extra=1, seeds=3, mb_sizes=(2, 4))


def test_exported_plan_reproduces_the_reported_iteration_time(run_cli, tmp_path):
    path = tmp_path / "best.json"
    code, out, err = run_cli("search", *SMALL, "--export", str(path), "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    best = result["plans"][0]
    assert best["feasible"] and path.exists()
    assert 500 <= result["evaluated"]["fast"] <= 600 and result["evaluated"]["full"] >= 3
    assert 0 <= result["evaluated"]["skipped"] <= result["evaluated"]["candidates"]  # list-timed, by bounds
    code, out, err = run_cli("simulate", "--plan", str(path), "--format", "json")
    assert code == 0, err
    again = json.loads(out)[0]
    assert again["iteration_s"] == best["iteration_s"] and again["tokens_per_s"] == best["tokens_per_s"]
    assert again["partition"] == best["partition"]


def test_table_shows_ranking_reference_and_frontier(run_cli):
    code, out, err = run_cli("search", *SMALL, "--schedules", "roundpipe,1f1b", "--top", "3")
    assert code == 0, err
    assert "evaluated:" in out and "by the full simulator" in out
    assert "RoundPipe's own partitioner" in out and "Pareto frontier" in out
    assert "rpsim: search evaluated" in err  # progress and counts go to stderr


def ranking(options: SearchOptions) -> list[tuple]:
    sc = make_scenario("qwen3-1.7b", "4090x8", TrainingSpec(global_batch=32))
    r = search(sc, options)
    return [(c.candidate, c.ranked_tokens_per_s, c.metrics["iteration_s"]) for c in r.ranked]


def test_same_inputs_and_seed_give_the_same_ranking_on_any_number_of_workers():
    one = ranking(SearchOptions(**{**QUICK.__dict__, "jobs": 1, "seed": 3}))
    assert one == ranking(SearchOptions(**{**QUICK.__dict__, "jobs": 2, "seed": 3}))
    assert len(one) >= 3 and one[0][1] == max(x[1] for x in one)


def test_dask_cluster_gives_the_same_ranking():
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                       dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        on_dask = ranking(SearchOptions(**{**QUICK.__dict__, "cluster": client}))
    assert on_dask == ranking(SearchOptions(**{**QUICK.__dict__, "jobs": 1}))


@pytest.mark.parametrize("argv, needle", [
    (["--budget", "0"], "--budget must be >= 1"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--schedules", "zigzag"], "valid choices"),
])
def test_bad_flags_exit_2(run_cli, argv, needle):
    code, _, err = run_cli("search", "--model", "qwen3-1.7b", "--gpus", "4090x8", *argv)
    assert code == 2 and needle in err and "Traceback" not in err


SMALL_HOST = """
gpu = "rtx4090"
p2p = "none"
duplex_factor = 0.54
[host]
cores = 16
dram_gib = 16
adam_params_per_s = 2.0e9
[[sockets]]
name = "s0"
dram_bandwidth_gb_per_s = 86
root_complex_gb_per_s = 100
[[gpus]]
count = 1
attach = "s0"
pcie_gen = 4
pcie_width = 16
h2d_efficiency = 0.8
d2h_efficiency = 0.85
"""


def test_nothing_fits_exits_1_with_the_nearest_alternatives(run_cli, tmp_path):
    server = tmp_path / "small-host.toml"
    server.write_text(SMALL_HOST)
    code, out, err = run_cli("search", "--model", "qwen3-1.7b", "--gpus", str(server), "--global-batch", "16",
                             "--budget", "300", "--jobs", "1", "--schedules", "roundpipe,1f1b")
    assert code == 1 and out == ""
    # One 24 GiB GPU cannot hold the 27 GiB of model state, so it streams from host memory, which holds
    # 16 bytes a parameter for full fine-tuning: 1.7 B parameters need ~27 GiB. LoRA trains ~1% of them.
    assert "GiB host memory; the server has 16 GiB" in err
    assert "fits with --mode lora" in err


def test_llama_70b_full_fine_tuning_needs_more_than_a_tebibyte_of_host_memory():
    """A real result, not a bug: 69 B parameters x 16 bytes of model state exceed the default 1 TiB."""
    ws = Workspace(make_scenario("llama-70b", "4090x8", TrainingSpec()))
    for c in enumerate_candidates(ws.base, ("roundpipe", "1f1b"), (2,))[::10]:
        e = ws.estimate(ws.resolve(c))
        assert not e.feasible and e.peak_host_bytes > 1024 * 2**30


def test_explicit_microbatching_is_kept_and_ties_between_partial_candidates_sort(run_cli, tmp_path):
    """--n-mb pins the microbatch size. This tiny model ties several candidates on the simulator's cost,
    whose optional fields (round size, partition) are None for some: sorting them used to raise
    TypeError ('<' between None and int)."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256,
                               "tie_word_embeddings": False, "model_type": "llama"}))
    code, out, err = run_cli("search", "--model", str(cfg), "--gpus", "h200x2", "--gpu-memory-gib", "0.01",
                             "--seq", "64", "--global-batch", "8", "--n-mb", "4", "--schedules", "roundpipe",
                             "--jobs", "1", "--format", "json")
    assert code == 0, err
    plans = json.loads(out)["plans"]
    assert plans and {p["mb_size"] for p in plans} == {2}
