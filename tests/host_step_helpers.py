"""A tiny model's RoundPipe-sync run on a host of given optimizer rates, for tests that check every simulated
host STEP against a closed form."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rpsim.catalog.servers import generic_server_table
from rpsim.planner import PlanRequest, make_plan
from rpsim.report.toml_text import toml_text
from rpsim.scenario import make_scenario
from rpsim.sim.simulate import simulate
from rpsim.specs import ModelSpec, TrainingSpec

# Its 256 x 512 MLP tensors' fp32 gradient + scratch fill a 1 MiB cache, its 256 x 256 attention ones
# half of it; its 1024 x 256 embedding and LM head do not fit.
TINY_MODEL = ModelSpec(name="tiny", n_layers=2, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64, mlp_width=512,
                       vocab=1024)


def host_table(**host: Any) -> dict:
    """rtx4090x2's generic server with these [host] keys (host issue not modelled)."""
    t = generic_server_table("rtx4090", 2)
    t["host"].pop("issue_us", None)
    t["host"].update(host)
    return t


def tiny_sync_steps(folder: Path, **host: Any) -> tuple[int, list[tuple[Any, Any]]]:
    """RoundPipe-sync of TINY_MODEL on host_table(**host), its DRAM far wider than the optimizer's rates (so
    every STEP takes its closed form alone): the plan's rounds per iteration (each layer's gradients staged
    per STEP) and each simulated STEP event with its layer's costs."""
    t = host_table(**host)
    for s in t["sockets"]:
        s["dram_bandwidth_gb_per_s"] = 1e6
    path = folder / "host.toml"
    path.write_text(toml_text(t))
    sc = make_scenario(TINY_MODEL, str(path), TrainingSpec(seq_len=64, global_batch=8, mb_size=1), None)
    plan = make_plan(sc, PlanRequest("roundpipe-sync"))
    steps = [e for e in simulate(plan, sc).trace.events if e.kind == "STEP"]
    return len(plan.options["round_sizes"]), [(e, sc.costs.layers[int(e.action.split(".c")[1])]) for e in steps]
