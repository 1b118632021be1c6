"""`--gpus` values: `<gpu>x<n>`, a named server preset, or a TOML topology file (docs/topology.md)."""
from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

from rpsim.catalog.data import preset_table
from rpsim.catalog.gpus import calibrated_gpu, gpu_entry, load_gpu, resolve_gpu_name
from rpsim.catalog.optimizer_rates import (
    RESIDENT_CURVE_KEY,
    THREADS_KEY,
    optimizer_rates_by_threads,
    resident_rate_by_cache_share,
)
from rpsim.errors import SpecError, choices_message
from rpsim.specs.server import HostSpec, LinkSpec, PCIeLinkSpec, ServerSpec, SocketSpec, SwitchSpec
from rpsim.units import GiB, MiB

GPUS_GRAMMAR = ("--gpus takes <gpu>x<count> (e.g. 4090x8, h200x2), a server preset name "
                "(rpsim list gpus), or a path to a topology .toml file")
_GRAMMAR_RE = re.compile(r"^(?P<gpu>[a-z0-9][a-z0-9-]*?)x(?P<n>\d+)$")

# Host defaults for the `<gpu>x<n>` grammar (hardware.md, "Typical 8x RTX 4090 server").
# 1 TiB: 2 sockets x 8 channels x one 64 GB DIMM, the common dual-socket build for 8-GPU boxes.
_DEFAULT_HOST = {"cores": 56, "dram_gib": 1024.0, "adam_params_per_s": 2.0e9}
_DEFAULT_SOCKET = {"dram_bandwidth_gb_per_s": 86.0, "root_complex_gb_per_s": 100.0}
_DEFAULT_INTER_SOCKET = {"bandwidth_gb_per_s": 40.0}
_GPUS_PER_SOCKET = 4

# rpsim models one server: its GPUs share one host's sockets, root complexes and DRAM. A host's CPUs give
# it at most ~640 PCIe lanes (8 sockets x 80 lanes on 8-socket Xeon Scalable hosts; 2-socket EPYC hosts
# have 128-160), i.e. at most 40 x16 GPU links; PCIe switches fan out further only by sharing uplinks.
# 64 leaves room for switch-heavy topologies; more GPUs than that is a cluster, which is not modelled,
# and a round-robin simulation over thousands of GPUs runs for minutes without an answer.
MAX_SERVER_GPUS = 64
MAX_GPUS_REASON = (f"rpsim models one server, and one host's CPUs offer at most ~640 PCIe lanes (8 sockets x 80), "
                   f"about 40 x16 GPU links; valid: 1 to {MAX_SERVER_GPUS} GPUs")

_TOP_KEYS = {"gpu", "n_gpus", "p2p", "p2p_bandwidth_gb_per_s", "duplex_factor", "host_numa", "source",
             "host", "inter_socket", "sockets", "switches", "gpus",
             "gpu_calibration",  # measured compute figures (rpexec calibrate); rpsim.catalog.gpus
             "calibration"}  # the calibration's conditions and raw figures: a record, not read
_SECTION_KEYS = {
    "host": {"cores", "dram_gib", "adam_params_per_s", "pageable_efficiency", "grad_accumulate_params_per_s",
             "grad_accumulate_resident_params_per_s", "last_level_cache_mib", "issue_us", RESIDENT_CURVE_KEY,
             "grad_widen_params_per_s", "last_level_cache_gb_per_s",
             THREADS_KEY},
    "inter_socket": {"bandwidth_gb_per_s", "latency_us"},
    "sockets": {"name", "dram_bandwidth_gb_per_s", "root_complex_gb_per_s"},
    "switches": {"name", "socket", "uplink_gb_per_s", "latency_us"},
    "gpus": {"count", "attach", "pcie_gen", "pcie_width", "h2d_efficiency", "d2h_efficiency"},
}


def server_names() -> list[str]:
    return list(preset_table("servers.toml"))


def load_server(text: str) -> ServerSpec:
    value = text.strip()
    presets = preset_table("servers.toml")
    if value in presets:
        return server_from_table(value, presets[value], where=f"preset {value}")
    if value.endswith(".toml") or Path(value).is_file():
        return server_from_toml_file(Path(value))
    match = _GRAMMAR_RE.match(value.lower())
    if not match:
        raise SpecError(f"--gpus {text!r} is malformed; {GPUS_GRAMMAR}")
    n = int(match["n"])
    if n < 1:
        raise SpecError(f"--gpus {text!r}: the GPU count must be at least 1")
    if n > MAX_SERVER_GPUS:
        raise SpecError(f"--gpus {text!r}: {n} GPUs is too many; {MAX_GPUS_REASON}")
    try:
        gpu_name = resolve_gpu_name(match["gpu"])
    except SpecError:
        valid = list(_gpu_aliases_and_names()) + server_names()
        raise SpecError(choices_message("gpu", match["gpu"], valid) + f"; {GPUS_GRAMMAR}") from None
    return server_from_table(value, generic_server_table(gpu_name, n), where=f"--gpus {value}")


def _gpu_aliases_and_names() -> list[str]:
    out = []
    for name, entry in preset_table("gpus.toml").items():
        out += [name, *entry.get("aliases", [])]
    return out


def generic_server_table(gpu_name: str, n: int) -> dict[str, Any]:
    """The `<gpu>x<n>` box: up to four GPUs per socket straight on the root complex."""
    defaults = gpu_entry(gpu_name)["server_defaults"]
    n_sockets = max(1, -(-n // _GPUS_PER_SOCKET)) if n > _GPUS_PER_SOCKET else 1
    n_sockets = min(n_sockets, 2) if n <= 2 * _GPUS_PER_SOCKET else n_sockets
    per_socket = -(-n // n_sockets)
    sockets = [{"name": f"s{k}", **_DEFAULT_SOCKET, **defaults.get("socket", {})} for k in range(n_sockets)]
    gpus = []
    remaining = n
    for k in range(n_sockets):
        count = min(per_socket, remaining)
        remaining -= count
        if count:
            gpus.append({"count": count, "attach": f"s{k}", "pcie_gen": gpu_entry(gpu_name)["pcie_gen"],
                         "pcie_width": gpu_entry(gpu_name)["pcie_width"],
                         "h2d_efficiency": defaults["h2d_efficiency"],
                         "d2h_efficiency": defaults["d2h_efficiency"]})
    table: dict[str, Any] = {
        "gpu": gpu_name, "n_gpus": n, "p2p": defaults["p2p"], "duplex_factor": defaults["duplex_factor"],
        "host": {**_DEFAULT_HOST, **defaults.get("host", {})}, "sockets": sockets, "gpus": gpus,
        "source": f"generic {gpu_name} x{n} box from the GPU's server defaults (gpus.toml)",
    }
    nvlink = gpu_entry(gpu_name)["nvlink_gb_per_s"]
    if defaults["p2p"] == "nvlink":
        table["p2p_bandwidth_gb_per_s"] = nvlink / 2  # bidirectional datasheet figure -> per direction
    if n_sockets > 1:
        table["inter_socket"] = dict(_DEFAULT_INTER_SOCKET)
    return table


def server_from_toml_file(path: Path) -> ServerSpec:
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"--gpus: topology file {str(path)!r} not found; {GPUS_GRAMMAR}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"--gpus: {str(path)!r} is not valid TOML ({e})") from None
    except OSError as e:  # a folder, a special file, no permission
        raise SpecError(f"--gpus: topology file {str(path)!r} cannot be read ({e.strerror or e})") from None
    return server_from_table(path.stem, table, where=str(path))


def _check_keys(where: str, table: dict[str, Any], valid: set[str]) -> None:
    for key in table:
        if key not in valid:
            raise SpecError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")


# What each number of a topology file may be (docs/topology.md): counts are integers >= 1, rates and
# sizes are > 0, efficiencies are fractions of a theoretical rate in (0, 1], latencies are >= 0.
_COUNT_KEYS = {"cores", "count", "n_gpus", "pcie_gen", "pcie_width"}
_POSITIVE_KEYS = {"dram_gib", "adam_params_per_s", "bandwidth_gb_per_s", "dram_bandwidth_gb_per_s",
                  "root_complex_gb_per_s", "uplink_gb_per_s", "p2p_bandwidth_gb_per_s",
                  "grad_accumulate_resident_params_per_s", "last_level_cache_mib", "grad_widen_params_per_s",
                  "last_level_cache_gb_per_s"}
_FRACTION_KEYS = {"h2d_efficiency", "d2h_efficiency", "pageable_efficiency", "duplex_factor"}
_NON_NEGATIVE_KEYS = {"latency_us"}
_STRING_KEYS = {"gpu", "name", "socket", "attach", "p2p", "host_numa", "source"}


def _check_numbers(where: str, table: dict[str, Any]) -> None:
    for key, value in table.items():
        if key in _STRING_KEYS and not isinstance(value, str):
            raise SpecError(f"{where}: {key} = {value!r}; must be a string")
        kinds = [k for k in (_COUNT_KEYS, _POSITIVE_KEYS, _FRACTION_KEYS, _NON_NEGATIVE_KEYS) if key in k]
        if not kinds:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if key in _COUNT_KEYS and not (number and isinstance(value, int) and value >= 1):
            raise SpecError(f"{where}: {key} = {value!r}; must be an integer >= 1")
        if key in _POSITIVE_KEYS and not (number and value > 0):
            raise SpecError(f"{where}: {key} = {value!r}; must be a number > 0")
        if key in _FRACTION_KEYS and not (number and 0 < value <= 1):
            raise SpecError(f"{where}: {key} = {value!r}; must be a fraction in (0, 1]")
        if key in _NON_NEGATIVE_KEYS and not (number and value >= 0):
            raise SpecError(f"{where}: {key} = {value!r}; must be a number >= 0")


def _need(where: str, table: dict[str, Any], key: str) -> Any:
    if key not in table:
        raise SpecError(f"{where}: missing key {key!r}")
    return table[key]


ISSUE_KINDS = ("embed", "layer", "head")


def _issue_s(where: str, table: Any) -> tuple[tuple[float, float, float], ...]:
    """[host.issue_us]: per layer kind, [forward, forward with autograd, forward + backward] in us."""
    if not isinstance(table, dict) or set(table) != set(ISSUE_KINDS):
        raise SpecError(f"{where}: needs exactly the keys {', '.join(ISSUE_KINDS)}, got {table!r}")
    out = []
    for kind in ISSUE_KINDS:
        row = table[kind]
        if (not isinstance(row, list) or len(row) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e7 for v in row)):
            raise SpecError(f"{where}: {kind} must be [forward_us, forward_grad_us, forward_backward_us], "
                            f"each a number >= 0, got {row!r}")
        out.append(tuple(v * 1e-6 for v in row))
    return tuple(out)  # type: ignore[return-value]


def server_from_table(name: str, t: dict[str, Any], where: str) -> ServerSpec:
    _check_keys(where, t, _TOP_KEYS)
    _check_numbers(where, t)
    for section in ("host", "inter_socket"):
        if section in t:
            if not isinstance(t[section], dict):
                raise SpecError(f"{where}: {section} must be a table [{section}], got {t[section]!r}")
            _check_keys(f"{where} [{section}]", t[section], _SECTION_KEYS[section])
            _check_numbers(f"{where} [{section}]", t[section])
    for section in ("sockets", "switches", "gpus"):
        entries = t.get(section, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise SpecError(f"{where}: {section} must be an array of tables [[{section}]], got {entries!r}")
        for i, entry in enumerate(entries):
            _check_keys(f"{where} [[{section}]] #{i}", entry, _SECTION_KEYS[section])
            _check_numbers(f"{where} [[{section}]] #{i}", entry)
    gpu = load_gpu(_need(where, t, "gpu"))
    if "gpu_calibration" in t:
        gpu = calibrated_gpu(gpu, t["gpu_calibration"], f"{where} [gpu_calibration]")
    sockets = tuple(SocketSpec(name=_need(where, s, "name"),
                               dram_bandwidth_bytes_per_s=_need(where, s, "dram_bandwidth_gb_per_s") * 1e9,
                               root_complex_bytes_per_s=_need(where, s, "root_complex_gb_per_s") * 1e9)
                    for s in t.get("sockets", []))
    switches = tuple(SwitchSpec(name=_need(where, s, "name"), socket=_need(where, s, "socket"),
                                uplink=LinkSpec(f"uplink:{s['name']}", _need(where, s, "uplink_gb_per_s") * 1e9,
                                                s.get("latency_us", 0.0) * 1e-6))
                     for s in t.get("switches", []))
    links: list[PCIeLinkSpec] = []
    attach: list[str] = []
    for g in _need(where, t, "gpus"):
        link = PCIeLinkSpec(generation=g.get("pcie_gen", gpu.pcie_generation),
                            width=g.get("pcie_width", gpu.pcie_width),
                            h2d_efficiency=_need(where, g, "h2d_efficiency"),
                            d2h_efficiency=_need(where, g, "d2h_efficiency"))
        links += [link] * g.get("count", 1)
        attach += [_need(where, g, "attach")] * g.get("count", 1)
    if len(links) > MAX_SERVER_GPUS:
        raise SpecError(f"{where}: [[gpus]] entries describe {len(links)} GPUs; {MAX_GPUS_REASON}")
    if "n_gpus" in t and t["n_gpus"] != len(links):
        raise SpecError(f"{where}: n_gpus = {t['n_gpus']} but [[gpus]] entries describe {len(links)} GPUs")
    inter = t.get("inter_socket")
    h = _need(where, t, "host")
    p2p_bw = t.get("p2p_bandwidth_gb_per_s")
    return ServerSpec(
        name=name, gpu=gpu, gpu_links=tuple(links), gpu_attach=tuple(attach), sockets=sockets,
        switches=switches,
        inter_socket=(LinkSpec("inter-socket", _need(where, inter, "bandwidth_gb_per_s") * 1e9,
                               inter.get("latency_us", 0.0) * 1e-6) if inter else None),
        host=HostSpec(cores=_need(where, h, "cores"), dram_bytes=_need(where, h, "dram_gib") * GiB,
                      adam_params_per_s=_need(where, h, "adam_params_per_s"),
                      **{k: h[k] for k in ("pageable_efficiency", "grad_accumulate_params_per_s",
                                           "grad_accumulate_resident_params_per_s", "grad_widen_params_per_s")
                         if k in h},
                      last_level_cache_bytes=h.get("last_level_cache_mib", 0.0) * MiB,
                      last_level_cache_bytes_per_s=(h["last_level_cache_gb_per_s"] * 1e9
                                                    if "last_level_cache_gb_per_s" in h else None),
                      issue_s=_issue_s(f"{where} [host.issue_us]", h["issue_us"]) if "issue_us" in h else None,
                      resident_rate_by_cache_share=(resident_rate_by_cache_share(f"{where} [host]", h[RESIDENT_CURVE_KEY])
                                                    if RESIDENT_CURVE_KEY in h else ()),
                      optimizer_rates_by_threads=(optimizer_rates_by_threads(f"{where} [host]", h[THREADS_KEY],
                                                                             _need(where, h, "cores"))
                                                  if THREADS_KEY in h else ())),
        duplex_factor=t.get("duplex_factor", 1.0), p2p=t.get("p2p", "none"),
        p2p_bytes_per_s=p2p_bw * 1e9 if p2p_bw else None, host_numa=t.get("host_numa", "interleave"),
        source=t.get("source", where),
    )
