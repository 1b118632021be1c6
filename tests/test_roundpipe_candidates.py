"""RoundPipe's partitioner candidates (rpsim.partition.roundpipe_auto.candidates) are computed in plain
Python so that `rpsim` starts without numpy; they must be the very floats the numpy formulation gives:
every contiguous sum prefix[j] - prefix[i] (i < j) of the sequential cumulative sums, distinct, sorted,
filtered to [W, inf)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.partition.roundpipe_auto import LayerTimes, candidates


def numpy_candidates(times: LayerTimes) -> list[float]:
    f = np.asarray(times.forward_s, dtype=float)
    b = np.asarray(times.backward_s, dtype=float)
    r = np.asarray(times.recompute_s, dtype=float)
    sums = []
    for arr in (f, r + b, f + b):
        prefix = np.concatenate([[0.0], np.cumsum(arr)])
        sums.append((prefix[None, :] - prefix[:, None])[np.triu_indices(len(prefix), 1)])
    cand = np.unique(np.concatenate(sums))
    w = float(max(f.max(), (r + b).max()))
    return cand[cand >= w * (1 - 1e-12)].tolist()


times_s = st.floats(min_value=1e-6, max_value=10.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n_layers=st.integers(1, 30))
def test_candidates_equal_the_numpy_formulation_bit_for_bit(data, n_layers):
    draw = lambda: data.draw(st.lists(times_s | st.sampled_from((0.25, 0.5, 1.0)), min_size=n_layers,
                                      max_size=n_layers))
    times = LayerTimes(draw(), draw(), draw(), [1.0] * n_layers, [1.0] * n_layers)
    assert candidates(times) == numpy_candidates(times)


def test_rpsim_cli_starts_without_numpy():
    import subprocess
    import sys
    code = "import sys, rpsim.cli.main; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
