"""Server topology: GPUs on PCIe links, behind switches or sockets, host DRAM, inter-socket link, P2P.

A host<->GPU copy crosses: host DRAM of a socket -> (inter-socket link, if the buffer lives on the
other socket) -> the socket's root complex -> (switch uplink, if the GPU sits behind a switch) ->
the GPU's own PCIe link. The simulator turns each of these into a shared resource.
"""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.errors import SpecError
from rpsim.specs.gpu import GPUSpec

# Usable PCIe bandwidth per lane per direction after line coding (PCI-SIG base specs):
# Gen3 8 GT/s and Gen4 16 GT/s and Gen5 32 GT/s with 128b/130b encoding.
PCIE_LANE_BYTES_PER_S = {3: 8e9 * 128 / 130 / 8, 4: 16e9 * 128 / 130 / 8, 5: 32e9 * 128 / 130 / 8}

P2P_KINDS = ("none", "nvlink", "pcie")
HOST_NUMA_POLICIES = ("interleave", "local")


@dataclass(frozen=True)
class LinkSpec:
    name: str
    bandwidth_bytes_per_s: float  # per direction
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.bandwidth_bytes_per_s > 0:
            raise SpecError(f"link {self.name!r}: bandwidth must be > 0, got {self.bandwidth_bytes_per_s}")


@dataclass(frozen=True)
class PCIeLinkSpec:
    generation: int
    width: int
    h2d_efficiency: float  # measured pinned-copy rate / theoretical, host -> GPU
    d2h_efficiency: float
    latency_s: float = 10e-6  # per-copy setup; cudaMemcpyAsync issue + DMA start, order of 10 us

    def __post_init__(self) -> None:
        if self.generation not in PCIE_LANE_BYTES_PER_S:
            raise SpecError(f"pcie_gen {self.generation!r} unknown; valid choices: 3, 4, 5")
        if self.width not in (1, 2, 4, 8, 16):
            raise SpecError(f"pcie_width {self.width!r} unknown; valid choices: 1, 2, 4, 8, 16")
        for name in ("h2d_efficiency", "d2h_efficiency"):
            if not 0 < getattr(self, name) <= 1:
                raise SpecError(f"{name} must lie in (0, 1], got {getattr(self, name)}")

    @property
    def theoretical_bytes_per_s(self) -> float:
        return PCIE_LANE_BYTES_PER_S[self.generation] * self.width

    @property
    def h2d_bytes_per_s(self) -> float:
        return self.theoretical_bytes_per_s * self.h2d_efficiency

    @property
    def d2h_bytes_per_s(self) -> float:
        return self.theoretical_bytes_per_s * self.d2h_efficiency


@dataclass(frozen=True)
class SwitchSpec:
    name: str
    socket: str
    uplink: LinkSpec  # the switch's single link to the root complex, shared by the GPUs behind it


@dataclass(frozen=True)
class SocketSpec:
    name: str
    dram_bandwidth_bytes_per_s: float  # measured (STREAM-like), reads and writes together
    root_complex_bytes_per_s: float  # per direction, all PCIe traffic of this socket


@dataclass(frozen=True)
class OptimizerRatesAtThreads:
    """The host optimizer's rates measured with fewer intra-op threads than cores (rpexec calibrate)."""
    threads: int
    adam_params_per_s: float
    grad_accumulate_params_per_s: float
    grad_accumulate_resident_params_per_s: float | None = None
    grad_widen_params_per_s: float | None = None


@dataclass(frozen=True)
class HostSpec:
    cores: int
    dram_bytes: float
    adam_params_per_s: float  # CPU Adam step throughput (fp32 master + moments)
    pageable_efficiency: float = 0.34  # pageable / pinned H2D; h200x2: 18.7 / 55.4 GB/s (hardware.md)
    # Summing one downloaded gradient into the fp32 gradient, params/s; None: from Adam's by byte ratio
    grad_accumulate_params_per_s: float | None = None
    # The first staged gradient's widening copy into the fp32 gradient, params/s (6 B per parameter); None:
    # priced as a later pass (rates from whole-step differences: rpsim.costs.cpu_optimizer)
    grad_widen_params_per_s: float | None = None
    # The same over a tensor whose fp32 gradient and scratch stay in the last-level cache across its staged
    # gradients (rpsim.costs.cpu_optimizer); None: no faster than a streamed one
    grad_accumulate_resident_params_per_s: float | None = None
    last_level_cache_bytes: float = 0.0  # the socket's largest CPU cache (lscpu "L3"); 0: unknown
    # What the last-level cache moves per second for inbound DMA (on Intel hosts every PCIe transfer
    # passes through it: DDIO) and the cores' cache-resident accumulation passes together, per socket,
    # measured by `rpexec calibrate` (rpsim.costs.cpu_optimizer); None: not modelled
    last_level_cache_bytes_per_s: float | None = None
    # (share of the cache a tensor's fp32 gradient + scratch fill, its later passes' params/s), measured
    # at all cores (rpsim.costs.cpu_optimizer: how much of a tensor stays resident); (): all of it
    resident_rate_by_cache_share: tuple[tuple[float, float], ...] = ()
    # the same rates at fewer threads than cores (the asynchronous STEP's count); (): not measured
    optimizer_rates_by_threads: tuple[OptimizerRatesAtThreads, ...] = ()
    # Seconds the executor's host threads spend issuing one pipeline layer, per kind (embed, layer, head):
    # (forward without autograd, forward with autograd, forward with autograd + backward), measured by
    # `rpexec calibrate`; None: issue is not modelled (rpsim.sim.host_issue).
    issue_s: tuple[tuple[float, float, float], ...] | None = None


@dataclass(frozen=True)
class ServerSpec:
    name: str
    gpu: GPUSpec
    gpu_links: tuple[PCIeLinkSpec, ...]  # one per GPU
    gpu_attach: tuple[str, ...]  # per GPU: a switch name or a socket name
    sockets: tuple[SocketSpec, ...]
    switches: tuple[SwitchSpec, ...]
    inter_socket: LinkSpec | None
    host: HostSpec
    duplex_factor: float  # per-direction rate multiplier while H2D and D2H share a link
    p2p: str  # none | nvlink | pcie
    p2p_bytes_per_s: float | None  # per direction, per GPU pair
    host_numa: str = "interleave"  # where host buffers live: spread over sockets, or GPU-local
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.gpu_links)
        if n < 1:
            raise SpecError(f"server {self.name!r}: needs at least one GPU")
        if len(self.gpu_attach) != n:
            raise SpecError(f"server {self.name!r}: gpu_attach has {len(self.gpu_attach)} entries for {n} GPUs")
        socket_names = [s.name for s in self.sockets]
        if not socket_names:
            raise SpecError(f"server {self.name!r}: needs at least one socket")
        switch_names = [s.name for s in self.switches]
        for sw in self.switches:
            if sw.socket not in socket_names:
                raise SpecError(f"switch {sw.name!r}: socket {sw.socket!r} unknown; valid choices: "
                                f"{', '.join(socket_names)}")
        for i, a in enumerate(self.gpu_attach):
            if a not in socket_names and a not in switch_names:
                raise SpecError(f"gpu {i}: attach {a!r} is neither a socket nor a switch; valid choices: "
                                f"{', '.join(socket_names + switch_names)}")
        if len(self.sockets) > 1 and self.inter_socket is None:
            raise SpecError(f"server {self.name!r}: {len(self.sockets)} sockets but no inter_socket link")
        if self.p2p not in P2P_KINDS:
            raise SpecError(f"p2p {self.p2p!r} unknown; valid choices: {', '.join(P2P_KINDS)}")
        if self.p2p != "none" and not self.p2p_bytes_per_s:
            raise SpecError(f"server {self.name!r}: p2p = {self.p2p!r} needs p2p_bandwidth")
        if self.host_numa not in HOST_NUMA_POLICIES:
            raise SpecError(f"host_numa {self.host_numa!r} unknown; valid choices: "
                            f"{', '.join(HOST_NUMA_POLICIES)}")
        if not 0 < self.duplex_factor <= 1:
            raise SpecError(f"duplex_factor must lie in (0, 1], got {self.duplex_factor}")

    @property
    def n_gpus(self) -> int:
        return len(self.gpu_links)

    @property
    def host_dram_bytes_per_s(self) -> float:
        """All sockets' DRAM: the host optimizer's state is spread over them (first touch by its threads)."""
        return sum(s.dram_bandwidth_bytes_per_s for s in self.sockets)

    def socket_of(self, gpu: int) -> str:
        attach = self.gpu_attach[gpu]
        for sw in self.switches:
            if sw.name == attach:
                return sw.socket
        return attach

    def switch_of(self, gpu: int) -> SwitchSpec | None:
        return next((sw for sw in self.switches if sw.name == self.gpu_attach[gpu]), None)

