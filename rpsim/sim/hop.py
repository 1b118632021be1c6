"""The fixed delay a `hop`-fidelity plan adds to every dependency that crosses GPUs: the profile's
measured `hop_s` where one is given, else derived from the server's links as the time one boundary
activation takes from one GPU to the next with the links to itself (no sharing, which is what `pcie`
fidelity adds). Pure; the simulator, the list timer and the CLI's header all read it from here."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.scenario import Scenario
from rpsim.sim.topology import Topology, build_topology


@dataclass(frozen=True)
class HopDelay:
    seconds: float
    source: str  # says where the number came from, for the report


def copy_between_gpus_s(n_bytes: float, p2p_bytes_per_s: float | None, d2h_bytes_per_s: float,
                        h2d_bytes_per_s: float, latency_s: float) -> float:
    """One GPU-to-GPU copy alone on its links: peer to peer where the server has it, else staged through
    pinned host memory (a download, then an upload, each paying the link latency)."""
    if p2p_bytes_per_s:
        return n_bytes / p2p_bytes_per_s + latency_s
    return n_bytes / d2h_bytes_per_s + n_bytes / h2d_bytes_per_s + 2 * latency_s


def boundary_bytes(sc: Scenario) -> float:
    """The activation one microbatch carries across a stage boundary: a transformer layer's input
    (tokens x hidden in the compute precision; every boundary between layers carries the same)."""
    inputs = [x.input_bytes for x in sc.costs.layers if x.kind == "layer"]
    return float(inputs[0]) if inputs else 0.0


def _bottleneck(topo: Topology, paths: tuple[tuple[str, ...], ...]) -> float:
    return min(topo.capacity_bytes_per_s[r] for r in paths[0])


def hop_delay(level: str, sc: Scenario) -> HopDelay:
    if level != "hop":
        return HopDelay(0.0, f"none at fidelity {level}")
    if sc.profile and sc.profile.hop_s:
        return HopDelay(sc.profile.hop_s, "the profile's measured hop_s")
    if sc.server.n_gpus < 2:
        return HopDelay(0.0, "one GPU: no dependency crosses GPUs")
    topo = build_topology(sc.server, sc.profile)
    n_bytes = boundary_bytes(sc)
    seconds = copy_between_gpus_s(n_bytes, topo.p2p_bytes_per_s, _bottleneck(topo, topo.d2h_paths[0]),
                                  _bottleneck(topo, topo.h2d_paths[1]), topo.latency_s)
    via = "peer to peer" if topo.p2p_bytes_per_s else "GPU 0 -> host -> GPU 1"
    return HopDelay(seconds, f"derived from the links: {n_bytes / 2**20:.1f} MiB boundary activation {via}, "
                             f"plus latency (no profile hop_s)")
