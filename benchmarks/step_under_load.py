"""The host STEP over one decoder layer, alone and beside a run's traffic, against rpsim's contention model
(issue 14).

In e03's asynchronous RoundPipe runs on one H200 the STEP over a llama-1.8b layer took 1.3-1.5x what the
same layer's STEP takes alone at the same thread count (`rpexec profile`'s layer_steps), while the
synchronous runs' STEPs, which mostly run after the backward, took 1.03-1.10x. The asynchronous STEP
runs while the GPU's copy engines move weights and gradients through host memory and while lane threads
issue kernels. This probe reproduces that beside the STEP, under control: for each thread count, the
STEP's parts (the first gradient's widening, each later gradient's summation, Adam + refresh) alone,
beside H2D + D2H copies at full speed ("copies"), and beside those plus a lane thread issuing GEMMs and
waiting on them ("copies+gemm": rpexec.background_load.BackgroundLoad). With `--machine`, it prints what rpsim
predicts for each part beside the measured copies (the machine file's DRAM shared max-min with the copy
flows, the part's rate capped at what it measured alone at that thread count), so a gap names the part
the model misses.

    python3 benchmarks/step_under_load.py --out DIR [--threads 16,11] [--hidden 3072 --heads 24 --kv-heads 8 --mlp 8192]
                                          [--machine MACHINE.toml] [--reps 3]

Writes DIR/step_under_load.json (every row; `--predict DIR/step_under_load.json --machine M` prints the
comparison again without a GPU)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = ("widen_s", "later_pass_s", "adam_refresh_s")
BACKGROUNDS = ("none", "copies", "copies+gemm")


def measure(a: argparse.Namespace) -> list[dict]:
    import torch
    from step_in_context import layer_spec

    from rpexec.background_load import BackgroundLoad
    from rpexec.hostparams import HostParams
    from rpexec.profile import LAYER_STEP_STAGED, host_decoder_layer, median_host_step_parts
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layer = host_decoder_layer(layer_spec(a.hidden, a.heads, a.kv_heads, a.mlp), 0)
    host = HostParams([layer], torch.bfloat16, pin=device == "cuda", lag=1)
    shapes = {n: p.shape for n, p in layer.named_parameters()}
    params = sum(p.numel() for p in layer.parameters())
    rows = []
    for threads in [int(t) for t in a.threads.split(",")] if a.threads else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for background in BACKGROUNDS:
            def timed() -> dict[str, float]:
                (_, widen, adam_1), (_, many, adam_n) = (median_host_step_parts(host, shapes, torch.bfloat16, n, a.reps)
                                                         for n in (1, LAYER_STEP_STAGED))
                return {"widen_s": widen, "later_pass_s": (many - widen) / (LAYER_STEP_STAGED - 1),
                        "adam_refresh_s": (adam_1 + adam_n) / 2}
            if background == "none":
                row = timed()
            else:
                with BackgroundLoad(device, 1, torch.bfloat16, compute=background == "copies+gemm") as load:
                    row = timed()
                row["copies_gb_per_s"] = load.copied_bytes / load.elapsed_s / 1e9
            rows.append({"threads": threads, "background": background, "params": params, **row})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def phase_seconds(cpu, topo, copies: list, params: float, n_staged: int, resident: float) -> list[float]:
    """Per STEP phase (streamed, widen, resident, adam) over `n_staged` gradients: its bytes over the rate
    max-min sharing gives it beside `copies` (rpsim.sim.sharing, as the simulator shares them)."""
    from rpsim.sim.sharing import Flow, allocate_rates
    out = []
    for phase_bytes, paths in zip(cpu.phase_bytes(params, n_staged, resident), topo.optimizer_paths, strict=True):
        rates = allocate_rates([Flow("step", paths[0], 1), *copies], topo.capacity_bytes_per_s, topo.duplex_pairs,
                               topo.duplex_factor)
        out.append(phase_bytes / rates["step"] if phase_bytes else 0.0)
    return out


def step_parts_s(cpu, topo, copies: list, params: float, resident: float) -> dict[str, float]:
    """PARTS as rpsim times them beside `copies`: the widening (one staged gradient's accumulation), a
    later pass (eight staged less one, over seven), Adam + refresh."""
    one, many = (phase_seconds(cpu, topo, copies, params, n, resident) for n in (1, 8))
    return {"widen_s": sum(one[:3]), "adam_refresh_s": one[3], "later_pass_s": (sum(many[:3]) - sum(one[:3])) / 7}


def predicted_parts(rows: list[dict], machine: str) -> dict[tuple[int, str], dict[str, float]]:
    """rpsim's slowdown of each part of each loaded row: the layer's alone rows as a profile's layer_steps
    (so each part's rate cap is what it measured alone at that thread count), beside one H2D and one D2H
    flow over the machine's topology, max-min as the simulator shares them."""
    from rpsim.catalog.servers import load_server
    from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
    from rpsim.costs.profile import LayerStepTiming, Profile
    from rpsim.sim.sharing import Flow
    from rpsim.sim.topology import build_topology
    server = load_server(machine)
    alone = [r for r in rows if r["background"] == "none"]
    profile = Profile(layers=(), layer_steps=tuple(LayerStepTiming(r["params"], r["threads"], r["adam_refresh_s"],
                                                                   r["widen_s"], r["later_pass_s"]) for r in alone))
    out = {}
    for r in rows:
        if r["background"] == "none":
            continue
        cpu = cpu_optimizer_rates(server.host, profile, server.host_dram_bytes_per_s, r["threads"])
        topo = build_topology(server, profile, r["threads"])
        copies = [Flow("h2d", topo.h2d_paths[0][0], 1), Flow("d2h", topo.d2h_paths[0][0], 1)]
        p = r["params"]
        resident = cpu.layer_resident_params(p, ())

        loaded, quiet = (step_parts_s(cpu, topo, beside, p, resident) for beside in (copies, []))
        out[(r["threads"], r["background"])] = {k: loaded[k] / quiet[k] for k in PARTS}
    return out


def report(rows: list[dict], machine: str | None) -> None:
    alone = {r["threads"]: r for r in rows if r["background"] == "none"}
    predicted = predicted_parts(rows, machine) if machine else {}
    print("threads background    copies GB/s   " + "  ".join(f"{p[:-2]:>22s}" for p in PARTS))
    print(" " * 36 + "  ".join(f"{'ms  x alone  rpsim x':>22s}" for _ in PARTS))
    for r in rows:
        cells = []
        for part in PARTS:
            ratio = r[part] / alone[r["threads"]][part]
            pred = predicted.get((r["threads"], r["background"]))
            model = f"{pred[part]:6.2f}" if pred else "     -"
            cells.append(f"{r[part] * 1e3:7.1f} {ratio:6.2f} {model:>7s}")
        print(f"{r['threads']:7d} {r['background']:12s} {r.get('copies_gb_per_s', 0):10.1f}   " + "  ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for step_under_load.json (measuring)")
    ap.add_argument("--predict", default=None, help="a saved step_under_load.json: print it against --machine")
    ap.add_argument("--machine", default=None, help="machine file for rpsim's prediction (default: none)")
    ap.add_argument("--threads", default=None,
                    help=f"comma-separated STEP thread counts (default: torch's; the one-H200 host's async: {os.cpu_count()}, 11)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=3072)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--mlp", type=int, default=8192, help="MLP width (llama-1.8b's and llama-2.8b's: 8192)")
    a = ap.parse_args()
    if a.predict:
        rows = json.loads(Path(a.predict).read_text())["rows"]
    else:
        if not a.out:
            sys.exit("step_under_load.py: give --out DIR to measure, or --predict FILE to compare a saved run")
        rows = measure(a)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "step_under_load.json").write_text(json.dumps({"rows": rows}, indent=1))
    report(rows, a.machine)


if __name__ == "__main__":
    main()
