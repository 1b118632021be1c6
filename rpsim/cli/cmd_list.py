"""`rpsim list models|gpus|schedules`."""
from __future__ import annotations

import argparse
import json

from rpsim.catalog import gpu_names, load_gpu, load_model, model_names, server_names
from rpsim.catalog.models import OVERRIDABLE
from rpsim.catalog.servers import load_server
from rpsim.costs.gemms import layer_params
from rpsim.report.table import format_table
from rpsim.units import GiB


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="list presets")
    p.add_argument("what", choices=["models", "gpus", "schedules"], help="which presets to list")
    p.add_argument("--format", default="table", choices=["table", "json"],
                   help="table for people, json for scripts (default %(default)s)")
    p.set_defaults(func=run)


def rows_for(what: str) -> list[dict[str, object]]:
    if what == "models":
        out = []
        for name in model_names():
            m = load_model(name)
            # The shape columns carry ModelSpec's field names, the names --model-override takes.
            out.append({"name": name, **{f: getattr(m, f) for f in OVERRIDABLE},
                        "layer_params_m": round(layer_params(m, m.n_layers - 1) / 1e6, 1), "source": m.source})
        return out
    if what == "gpus":
        out = []
        for name in gpu_names():
            g = load_gpu(name)
            out.append({"name": name, "kind": "gpu", "bf16_tflops": g.bf16_flops_per_s / 1e12,
                        "memory_gib": round(g.memory_bytes / GiB, 1), "pcie": f"gen{g.pcie_generation} x{g.pcie_width}",
                        "source": g.source})
        for name in server_names():
            s = load_server(name)
            out.append({"name": name, "kind": "server", "bf16_tflops": s.gpu.bf16_flops_per_s / 1e12,
                        "memory_gib": round(s.gpu.memory_bytes / GiB, 1), "pcie": f"{s.n_gpus}x {s.gpu.name}, p2p {s.p2p}",
                        "source": s.source})
        return out
    from rpsim.schedules import SCHEDULES
    return [{"name": n, "description": b.DESCRIPTION} for n, b in SCHEDULES.items()]


def run(args: argparse.Namespace) -> int:
    rows = rows_for(args.what)
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    else:
        headers = list(rows[0]) if rows else ["name"]
        print(format_table(headers, [[r[h] for h in headers] for r in rows]))
    return 0
