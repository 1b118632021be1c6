"""An Action pickled in one process and loaded in another (process pools, Dask) hashes as that process's
Actions do: its cached hash covers strings, whose hashes are salted per process, so it is recomputed on
load. Before, a dict keyed by unpickled Actions missed every lookup in the loading process."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

from rpsim.ir.action import Action

LOAD = ("import pickle, sys; from rpsim.ir.action import Action; d = pickle.loads(sys.stdin.buffer.read()); "
        "print(d.get(Action('LOAD', 3, 4, 1, 'F', chunk=9)), d.get(Action('F', 0, 2)))")


def test_a_dict_of_actions_pickled_in_one_process_is_found_in_another():
    data = pickle.dumps({Action("LOAD", 3, 4, 1, "F", chunk=9): 1, Action("F", 0, 2): 2})
    seed = "54321" if os.environ.get("PYTHONHASHSEED") == "12345" else "12345"  # unlike this process's salt
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", LOAD], input=data, capture_output=True, check=True, env=env)
    assert out.stdout.split() == [b"1", b"2"]


def test_round_trip_in_process():
    a = Action("SEND", 2, 5, 3, "B", peer=1)
    b = pickle.loads(pickle.dumps(a))
    assert b == a and hash(b) == hash(a) and str(b) == str(a)
