"""Rebuild a machine file from `rpexec calibrate --raw`'s saved figures, repricing the host optimizer's
rates from its per-part step timings with today's rpexec.profile.optimizer_rates_from_times (the raw
file keeps the timings; the rates in it are the ones the calibrating code computed).

    python3 experiments/machine_from_raw.py RAW.json -o MACHINE.toml

Raw files from before the per-part timings (session 13) keep their rates as they are."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rpexec.machine_file import machine_table
from rpexec.profile import optimizer_rates_from_times
from rpsim.catalog.servers import generic_server_table
from rpsim.jsonfile import read_json
from rpsim.report.files import write_text_atomic
from rpsim.report.toml_text import toml_text


def repriced(raw: dict) -> dict:
    opt = dict(raw["optimizer"]["alone"])
    if "accumulate_1_staged_s" in opt:
        opt = optimizer_rates_from_times(opt)
        opt["by_threads"] = [optimizer_rates_from_times(r) if "accumulate_1_staged_s" in r else r
                             for r in opt.get("by_threads", [])]
    return {**raw, "optimizer": {**raw["optimizer"], "alone": opt}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    raw = repriced(read_json(a.raw, "raw calibration", ValueError))
    s = raw["settings"]
    write_text_atomic(a.output, toml_text(machine_table(raw, generic_server_table(s["gpu_preset"], s["n_gpus"]))))
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
