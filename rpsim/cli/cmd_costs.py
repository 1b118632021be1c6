"""`rpsim costs`: per-layer FLOPs, bytes and times, plus model totals."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from rpsim.cli.setup_flags import add_setup_flags, setup_from_args
from rpsim.report.table import format_table
from rpsim.scenario import Scenario
from rpsim.units import GiB


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="per-layer costs of a model on a GPU")
    add_setup_flags(p)
    p.add_argument("--format", default="table", choices=["table", "json"],
                   help="table for people, json (every layer's FLOPs, bytes, seconds) for scripts "
                        "(default %(default)s)")
    p.set_defaults(func=run)


def totals(s: Scenario) -> dict[str, float]:
    c = s.costs
    layer_inputs = sum(x.input_bytes for x in c.layers if x.kind == "layer")
    return {
        "total_params": c.total_params,
        "active_params": c.active_params,
        "trainable_params": sum(x.trainable_params for x in c.layers),
        "model_state_bytes": sum(x.weight_bytes for x in c.layers if not (x.kind == "head" and s.model.tied_embeddings))
        + sum(x.grad_bytes + x.optim_bytes for x in c.layers),
        "weight_bytes": sum(x.weight_bytes for x in c.layers),
        "activation_bytes_per_mb_full": sum(x.activation_bytes for x in c.layers),
        "activation_bytes_per_mb_recompute_layer": layer_inputs,
        "forward_flops_per_mb": sum(x.forward_flops for x in c.layers),
        "training_flops_per_token": sum(x.forward_flops + x.backward_flops for x in c.layers) / c.mb_tokens,
        "forward_s_per_mb": sum(x.forward_s for x in c.layers),
        "backward_s_per_mb": sum(x.backward_s for x in c.layers),
        "mb_tokens": c.mb_tokens,
    }


def grouped_rows(s: Scenario) -> list[list[object]]:
    """One row per run of identical layers (all transformer layers of a dense model are alike)."""
    rows: list[list[object]] = []
    layers = s.costs.layers
    i = 0
    while i < len(layers):
        j = i
        key = _signature(layers[i])
        while j + 1 < len(layers) and _signature(layers[j + 1]) == key:
            j += 1
        x = layers[i]
        name = x.name if i == j else f"{x.name}..{layers[j].name.split('.')[-1]} (x{j - i + 1})"
        rows.append([name, round(x.params / 1e6, 2), round(x.forward_flops / 1e12, 3),
                     round(x.forward_s * 1e3, 3), round(x.backward_s * 1e3, 3), round(x.weight_bytes / GiB, 3),
                     round(x.activation_bytes / GiB, 3), round(x.input_bytes / GiB, 4)])
        i = j + 1
    return rows


def _signature(x: object) -> tuple:
    d = asdict(x)  # type: ignore[call-overload]
    d.pop("name")
    return tuple(sorted(d.items()))


def run(args: argparse.Namespace) -> int:
    s = setup_from_args(args)
    t = totals(s)
    if args.format == "json":
        print(json.dumps({"model": s.model.name, "server": s.server.name, "gpu": s.server.gpu.name,
                          "seq_len": s.training.seq_len, "mb_size": s.training.mb_size,
                          "precision": s.training.precision, "mode": s.training.mode, **t,
                          "notes": list(s.costs.notes), "layers": [asdict(x) for x in s.costs.layers]}, indent=1))
        return 0
    print(f"# {s.model.name} on {s.server.name} ({s.server.gpu.name}), seq {s.training.seq_len}, "
          f"mb size {s.training.mb_size} ({s.costs.mb_tokens} tokens), {s.training.precision}, {s.training.mode}")
    for note in s.costs.notes:
        print(f"# note: {note}")
    print(format_table(["layer", "params_M", "fwd_TFLOP", "fwd_ms", "bwd_ms", "weights_GiB", "act_GiB",
                        "input_GiB"], grouped_rows(s)))
    print()
    print(f"total params      {t['total_params'] / 1e9:.3f} B   active {t['active_params'] / 1e9:.3f} B   "
          f"trainable {t['trainable_params'] / 1e9:.3f} B")
    print(f"model states      {t['model_state_bytes'] / GiB:.1f} GiB (weights {t['weight_bytes'] / GiB:.1f} GiB on GPUs)")
    print(f"activations / mb  {t['activation_bytes_per_mb_full'] / GiB:.2f} GiB full, "
          f"{t['activation_bytes_per_mb_recompute_layer'] / GiB:.3f} GiB layer inputs (recompute)")
    print(f"training FLOPs    {t['training_flops_per_token'] / 1e9:.2f} GFLOP/token (fwd + bwd, no recompute)")
    print(f"one mb fwd + bwd  {(t['forward_s_per_mb'] + t['backward_s_per_mb']):.3f} s on one {s.server.gpu.name}")
    return 0
