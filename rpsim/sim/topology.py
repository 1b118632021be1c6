"""The server as shared resources and paths: which resources a copy between host and GPU g, or between
two GPUs, crosses (see docs/topology.md), and which the host optimizer's DRAM traffic crosses. A
profile's measured link figures replace the catalog's."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.costs import Profile
from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
from rpsim.ir.action import UPLOAD_KINDS
from rpsim.sim.host_issue import INTERPRETER
from rpsim.specs import ServerSpec

Path = tuple[str, ...]
# Flow priority classes by transfer kind (0 most urgent): activations before parameters and gradients,
# as RoundPipe's transfer engine orders them. The engine and the list timer both read this.
TRANSFER_PRIORITY = {"ACT_OUT": 0, "ACT_IN": 0, "SEND": 0, "LOAD": 1, "OFFLOAD": 1}


@dataclass(frozen=True)
class Topology:
    capacity_bytes_per_s: dict[str, float]
    duplex_pairs: tuple[tuple[str, str], ...]
    duplex_factor: float
    h2d_paths: tuple[tuple[Path, ...], ...]  # per GPU: one path per host socket holding a share
    d2h_paths: tuple[tuple[Path, ...], ...]
    p2p_bytes_per_s: float | None
    latency_s: float
    # The host optimizer's three phases (rpsim.costs.cpu_optimizer: streamed accumulation, cache-resident
    # accumulation, Adam): per phase, one path per socket holding a share of the state, each crossing that
    # socket's DRAM and the phase's own rate cap (the optimizer's measured speed when DRAM is not what
    # limits it).
    optimizer_paths: tuple[tuple[Path, ...], ...] = ((), (), (), ())

    def p2p_path(self, src: int, dst: int) -> Path:
        return (f"g{src}.p2p_out", f"g{dst}.p2p_in")

    def paths_of(self, gpu: int, kind: str, peer: int | None = None) -> tuple[Path, ...]:
        """The paths a transfer of `kind` issued on `gpu` takes, one flow per path, the bytes split evenly
        (host buffers are interleaved over sockets: one share per socket). The one choice the engine
        and the list timer share."""
        if kind == "SEND":
            assert peer is not None, "a SEND names its peer GPU"
            return (self.p2p_path(gpu, peer),)
        return self.h2d_paths[gpu] if kind in UPLOAD_KINDS else self.d2h_paths[gpu]


def build_topology(server: ServerSpec, profile: Profile | None = None, step_threads: int | None = None) -> Topology:
    """`step_threads`: the host optimizer STEP's thread count (rpsim.costs.optimizer_threads; None: all
    cores), which sets the optimizer phases' rate caps."""
    cap: dict[str, float] = {}
    pairs: list[tuple[str, str]] = []
    duplex = server.duplex_factor
    for g, link in enumerate(server.gpu_links):
        h2d, d2h = link.h2d_bytes_per_s, link.d2h_bytes_per_s
        if profile and profile.h2d_bytes_per_s:
            h2d = profile.h2d_bytes_per_s
        if profile and profile.d2h_bytes_per_s:
            d2h = profile.d2h_bytes_per_s
        cap[f"g{g}.h2d"], cap[f"g{g}.d2h"] = h2d, d2h
        pairs.append((f"g{g}.h2d", f"g{g}.d2h"))
        if server.p2p != "none" and server.p2p_bytes_per_s:
            p2p = profile.p2p_bytes_per_s if profile and profile.p2p_bytes_per_s else server.p2p_bytes_per_s
            cap[f"g{g}.p2p_out"] = cap[f"g{g}.p2p_in"] = p2p
    if profile and profile.duplex_bytes_per_s and profile.h2d_bytes_per_s and profile.d2h_bytes_per_s:
        # measured both-directions total -> per-direction multiplier
        duplex = min(1.0, profile.duplex_bytes_per_s / (profile.h2d_bytes_per_s + profile.d2h_bytes_per_s))
    for sw in server.switches:
        cap[f"sw:{sw.name}.down"] = cap[f"sw:{sw.name}.up"] = sw.uplink.bandwidth_bytes_per_s
    llc = server.host.last_level_cache_bytes_per_s  # (rpsim.costs.cpu_optimizer, "DMA through the cache")
    for sock in server.sockets:
        cap[f"rc:{sock.name}.down"] = cap[f"rc:{sock.name}.up"] = sock.root_complex_bytes_per_s
        cap[f"dram:{sock.name}"] = sock.dram_bandwidth_bytes_per_s
        if llc:
            cap[f"llc:{sock.name}"] = llc
    if server.inter_socket is not None:
        for a in server.sockets:
            for b in server.sockets:
                if a.name != b.name:
                    cap[f"x:{a.name}>{b.name}"] = server.inter_socket.bandwidth_bytes_per_s
    h2d_paths, d2h_paths = [], []
    for g in range(server.n_gpus):
        home = server.socket_of(g)
        sw = server.switch_of(g)
        holders = [s.name for s in server.sockets] if server.host_numa == "interleave" else [home]
        h2d_paths.append(tuple(_path(k, home, sw.name if sw else None, g, "down", bool(llc)) for k in holders))
        d2h_paths.append(tuple(tuple(reversed(_path(k, home, sw.name if sw else None, g, "up", bool(llc))))
                               for k in holders))
    latency = server.gpu_links[0].latency_s
    p2p = cap.get("g0.p2p_out")
    rates = cpu_optimizer_rates(server.host, profile, server.host_dram_bytes_per_s, step_threads)
    cap[OPTIMIZER_ACCUMULATE], cap[OPTIMIZER_ADAM] = rates.accumulate_bytes_per_s, rates.adam_bytes_per_s
    cap[OPTIMIZER_RESIDENT] = rates.resident_accumulate_bytes_per_s
    cap[OPTIMIZER_WIDEN] = rates.widen_bytes_per_s
    if server.host.issue_s is not None:
        cap[INTERPRETER] = 1.0  # seconds of issue work per second (rpsim.sim.host_issue)
    # a resident pass crosses the cache where it is modelled, else its DRAM read
    optimizer_paths = tuple(tuple((f"llc:{s.name}" if llc and phase == OPTIMIZER_RESIDENT else f"dram:{s.name}", phase)
                                  for s in server.sockets)
                            for phase in (OPTIMIZER_ACCUMULATE, OPTIMIZER_WIDEN, OPTIMIZER_RESIDENT, OPTIMIZER_ADAM))
    return Topology(cap, tuple(pairs), duplex, tuple(h2d_paths), tuple(d2h_paths), p2p, latency,
                    optimizer_paths)  # type: ignore[arg-type]


OPTIMIZER_ACCUMULATE = "host.optimizer.accumulate"
OPTIMIZER_ADAM = "host.optimizer.adam"
# later accumulation passes over cache-resident tensors: the cores bound them, each takes 2 B from DRAM
OPTIMIZER_RESIDENT = "host.optimizer.accumulate_resident"
# the first staged gradient's widening copy, where its rate was measured apart (else it has no bytes)
OPTIMIZER_WIDEN = "host.optimizer.widen"


def _path(holder: str, home: str, switch: str | None, gpu: int, direction: str, llc: bool = False) -> Path:
    """Host socket `holder` -> GPU (direction "down"); the d2h path uses the "up" resources reversed.
    `llc`: the transfer also crosses the holder's last-level cache (Intel DDIO)."""
    hops = [f"dram:{holder}", *([f"llc:{holder}"] if llc else [])]
    if holder != home:
        hops.append(f"x:{holder}>{home}" if direction == "down" else f"x:{home}>{holder}")
    hops.append(f"rc:{home}.{direction}")
    if switch:
        hops.append(f"sw:{switch}.{direction}")
    hops.append(f"g{gpu}.h2d" if direction == "down" else f"g{gpu}.d2h")
    return tuple(hops)
