"""The machine file `rpexec calibrate` writes: the GPU preset's generic server with every figure measured
on this machine in place of the preset's (docs/topology.md lists what each figure becomes). Pure
functions of the raw measurements (rpexec.calibrate.measure), so a machine file can be rebuilt from a
saved raw JSON without the machine."""
from __future__ import annotations

import os
import statistics
from typing import Any

from rpexec.profile import STATE_BYTES_PER_PARAM
from rpsim.costs.cpu_optimizer import ACCUMULATE_BYTES_PER_PARAM, ADAM_AND_REFRESH_BYTES_PER_PARAM
from rpsim.specs.server import PCIE_LANE_BYTES_PER_S


def dram_capacity_gb_per_s(m: dict[str, Any]) -> float:
    """Host DRAM capacity: at least any traffic measured through it. The copy test counts reads and
    writes; all GPUs' H2D and D2H copies at once read and write DRAM too; the optimizer's step over a
    state well beyond the last-level cache moves its nominal bytes per parameter from DRAM (a state that
    fits the cache says nothing of DRAM and is left out), alone and beside the copies of the load test."""
    candidates = [m["dram_gb_per_s"]]
    if "links" in m:
        candidates.append(m["links"]["all_both_gb_per_s"])
    opt = m["optimizer"]["alone"]
    llc = m["conditions"].get("last_level_cache_bytes", 0)
    if llc and opt["params"] * STATE_BYTES_PER_PARAM >= 4 * llc:
        nominal = opt["params"] * (ADAM_AND_REFRESH_BYTES_PER_PARAM + ACCUMULATE_BYTES_PER_PARAM)
        candidates.append(nominal / opt["step_1_staged_s"] / 1e9)
        loaded = m["optimizer"]["under_load"]
        if "background_copy_gb_per_s" in loaded:
            candidates.append(nominal / loaded["step_1_staged_s"] / 1e9 + loaded["background_copy_gb_per_s"])
    return max(candidates)


def last_level_cache_gb_per_s(beside: dict[str, Any]) -> float:
    """The last-level cache's capacity for inbound DMA and the cores' cache-resident passes together
    (rpsim: HostSpec.last_level_cache_bytes_per_s), from calibrate's resident_beside_copies: the resident
    passes' 18 B per parameter at their rate beside the copies plus the copies' bytes; never below what
    the passes moved alone (then the cache did not limit them)."""
    resident_bytes = ACCUMULATE_BYTES_PER_PARAM / 1e9
    return max(beside["beside_params_per_s"] * resident_bytes + beside["copies_gb_per_s"],
               beside["alone_params_per_s"] * resident_bytes)


def host_dram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def machine_table(m: dict[str, Any], preset_server: dict[str, Any]) -> dict[str, Any]:
    """The machine file: the GPU preset's generic server, with every figure measured here replacing the
    preset's. `preset_server` is rpsim.catalog.servers.generic_server_table(gpu, n) (display units)."""
    s = m["settings"]
    t = dict(preset_server)
    t["source"] = (f"rpexec calibrate on {m['conditions']['device_name']} ({s['device']}), "
                   f"{m['conditions']['date']}, torch {m['conditions']['torch']}")
    opt = m["optimizer"]["alone"]
    t["host"] = {**t["host"], "cores": m["conditions"]["host_cores"], "dram_gib": m["conditions"]["host_dram_gib"],
                 "adam_params_per_s": opt["adam_params_per_s"],
                 "grad_accumulate_params_per_s": opt["grad_accumulate_params_per_s"],
                 **({"grad_widen_params_per_s": opt["grad_widen_params_per_s"]} if "grad_widen_params_per_s" in opt else {})}
    if "resident" in opt:  # raw files from before the cache-resident probe have none
        t["host"]["last_level_cache_mib"] = opt["resident"]["cache_bytes"] / 2**20
        t["host"]["grad_accumulate_resident_params_per_s"] = opt["resident"]["resident_accumulate_params_per_s"]
    if opt.get("resident_by_share"):  # raw files from before session 13 have neither curve
        t["host"]["grad_accumulate_resident_by_cache_share"] = [
            [r["share"], r["resident_accumulate_params_per_s"]] for r in opt["resident_by_share"]]
    if opt.get("resident_beside_copies") and s["device"] == "cuda":  # (on a CPU the copies are no DMA)
        t["host"]["last_level_cache_gb_per_s"] = last_level_cache_gb_per_s(opt["resident_beside_copies"])
    if opt.get("by_threads"):
        t["host"]["optimizer_threads"] = [
            {"threads": r["threads"], "adam_params_per_s": r["adam_params_per_s"],
             "grad_accumulate_params_per_s": r["grad_accumulate_params_per_s"],
             **({"grad_widen_params_per_s": r["grad_widen_params_per_s"]} if "grad_widen_params_per_s" in r else {}),
             **({"grad_accumulate_resident_params_per_s": r["resident_accumulate_params_per_s"]}
                if "resident_accumulate_params_per_s" in r else {})}
            for r in opt["by_threads"]]
    if "issue_s" in m:
        t["host"]["issue_us"] = {kind: [v * 1e6 for v in figures] for kind, figures in m["issue_s"].items()}
    gpus = [dict(g) for g in t["gpus"]]
    sockets = [dict(x) for x in t["sockets"]]
    if "links" in m:
        links = m["links"]
        lane = PCIE_LANE_BYTES_PER_S[gpus[0]["pcie_gen"]] * gpus[0]["pcie_width"] / 1e9
        h2d = statistics.median(g["h2d_gb_per_s"] for g in links["per_gpu"])
        d2h = statistics.median(g["d2h_gb_per_s"] for g in links["per_gpu"])
        both = statistics.median(g["both_gb_per_s"] for g in links["per_gpu"])
        for g in gpus:
            g["h2d_efficiency"] = min(1.0, h2d / lane)
            g["d2h_efficiency"] = min(1.0, d2h / lane)
        t["duplex_factor"] = min(1.0, both / (h2d + d2h))
        if "p2p_gb_per_s" in links:
            t["p2p_bandwidth_gb_per_s"] = links["p2p_gb_per_s"]
        # One measured host: all its GPUs' copies at once bound the root complex (per direction).
        gpus = [{**g, "count": g["count"], "attach": "s0"} for g in gpus]
        sockets = [{"name": "s0", "dram_bandwidth_gb_per_s": dram_capacity_gb_per_s(m),
                    "root_complex_gb_per_s": max(links["all_h2d_gb_per_s"], links["all_d2h_gb_per_s"])}]
        t.pop("inter_socket", None)
        t["n_gpus"] = sum(g["count"] for g in gpus)
    else:  # CPU: the host is measured, the links stay the preset's
        for x in sockets:
            x["dram_bandwidth_gb_per_s"] = dram_capacity_gb_per_s(m) / len(sockets)
    t["gpus"], t["sockets"] = gpus, sockets
    t["gpu_calibration"] = {
        "precision": s["dtype"],
        "elementwise_gb_per_s": m["device_memory"]["memory_bandwidth_gb_per_s"],
        "kernel_floor_us": m["device_memory"]["kernel_floor_us"],
        "attention_tflops": [m["attention"]["forward_tflops"], m["attention"]["backward_tflops"]],
        "gemm_tflops": m["gemm"],
    }
    loaded = m["optimizer"]["under_load"]
    t["calibration"] = {
        **{k: v for k, v in m["conditions"].items()},
        "links_measured": "links" in m,
        "dram_gb_per_s": m["dram_gb_per_s"],
        "attention_shape": m["attention"]["shape"],
        "optimizer_alone_step_1_staged_s": opt["step_1_staged_s"],
        "optimizer_alone_step_4_staged_s": opt["step_4_staged_s"],
        "optimizer_under_load_step_1_staged_s": loaded["step_1_staged_s"],
        "optimizer_under_load_step_4_staged_s": loaded["step_4_staged_s"],
        "optimizer_step_params": opt["params"],
        **({"optimizer_resident_probe": {k: v for k, v in opt["resident"].items()
                                         if k != "resident_accumulate_params_per_s"}} if "resident" in opt else {}),
        "optimizer_under_load_background_copy_gb_per_s": loaded["background_copy_gb_per_s"],
        "background_alone_copy_gb_per_s": loaded["background_alone_copy_gb_per_s"],
        "background_gemm_tflops_beside_optimizer": loaded["background_gemm_tflops"],
        "background_alone_gemm_tflops": loaded["background_alone_gemm_tflops"],
        "optimizer_under_load_background": loaded["background"],
    }
    if "strided_elementwise" in m:  # raw files from before the probe have none
        t = with_strided_elementwise(t, m["strided_elementwise"])
    if "links" in m:
        links = m["links"]
        t["calibration"].update({
            "links_per_gpu_h2d_gb_per_s": [g["h2d_gb_per_s"] for g in links["per_gpu"]],
            "links_per_gpu_d2h_gb_per_s": [g["d2h_gb_per_s"] for g in links["per_gpu"]],
            "links_per_gpu_both_gb_per_s": [g["both_gb_per_s"] for g in links["per_gpu"]],
            "links_all_h2d_gb_per_s": links["all_h2d_gb_per_s"], "links_all_d2h_gb_per_s": links["all_d2h_gb_per_s"],
            "links_all_both_gb_per_s": links["all_both_gb_per_s"],
        })
    return t


def with_strided_elementwise(table: dict[str, Any], probe: dict[str, Any],
                             conditions: dict[str, Any] | None = None) -> dict[str, Any]:
    """A machine file with the strided elementwise probe's rates (rpexec.strided_probe) in its
    [gpu_calibration] and the probe's shapes and times in its [calibration]; `conditions` (date, torch,
    device) when the probe ran apart from the file's other measurements (`rpexec calibrate --only`)."""
    t = dict(table)
    t["gpu_calibration"] = {**t.get("gpu_calibration", {}),
                            "strided_elementwise_gb_per_s": [probe["forward_gb_per_s"], probe["backward_gb_per_s"]]}
    record = {"strided_elementwise_shapes": [r["shape"] for r in probe["shapes"]],
              "strided_elementwise_forward_us": [r["forward_us"] for r in probe["shapes"]],
              "strided_elementwise_backward_us": [r["backward_us"] for r in probe["shapes"]],
              "strided_elementwise_counted_bytes": [r["counted_bytes"] for r in probe["shapes"]]}
    record.update({f"strided_elementwise_{k}": v for k, v in (conditions or {}).items()})
    t["calibration"] = {**t.get("calibration", {}), **record}
    return t
