"""What a GPU holds while the `roundpipe` library runs a forward stage, from its source (roundpipe 0.1.1).

Two things the simulator's memory rules (rpsim.sim.memory, written for rpexec) do not do:
- run.py, run_forward: a training forward runs under `torch.enable_grad()` (its grad context follows the
  run's requires_grad), so each layer's forward saves its activations; the graph dies when the next layer
  starts (the output is detached and the local reassigned), so one layer's saved activations are live at
  a time, not the no-grad working set.
- run.py, save_input, and device.py, InterStreamMemManager: every input a backward stage will recompute
  from (every layer's with recompute_grain="layer", a backward stage's first layer's with "stage") is
  downloaded at once, and the GPU tensor is kept alive by the memory manager's `in_use` table until the
  microbatch's `flush()`, then in its free queue until the compute stream next waits on the download
  stream, which is at the start of the next microbatch's output download (transfer.py, async_d2h). So at
  the end of microbatch k's last layer the GPU holds microbatch k's saved inputs and output and microbatch
  k-1's as well.
The stage's weights are held for all its microbatches; the previous stage's are released when this one's
upload is issued (transfer.py, upload_layers' stream sync), before its first forward.

Not counted: the rotary cos / sin (2 x 2 B x head_dim per token) and int64 position ids and labels that
travel with every boundary, shared by a stage's layers (0.04 GiB at 73K tokens for head_dim 128).
"""
from __future__ import annotations

from collections.abc import Sequence

from rpsim.costs.layer_costs import LayerCost
from rpsim.ir import Partition


def library_forward_stage_peak_bytes(layers: Sequence[LayerCost], partition: Partition, stage: int,
                                     recompute: str, n_mb: int) -> float:
    """Bytes held at the end of the last layer of forward stage `stage` for a microbatch after the first:
    its saved activations and output, the inputs saved for the recompute and the output of this microbatch
    and (with more than one microbatch per call) of the previous one, and the stage's weights."""
    lo, hi = partition.fwd[stage]
    starts = {a for a, _ in partition.bwd}
    saved = sum(layers[j].input_bytes for j in range(lo, hi) if recompute == "layer" or j in starts)
    out = layers[hi].input_bytes  # the next layer's input
    per_microbatch = saved + out
    working = layers[hi - 1].activation_bytes  # the last layer's saved activations, grad enabled
    weights = sum(x.weight_bytes for x in layers[lo:hi])
    return working + per_microbatch * (2 if n_mb > 1 else 1) + weights


def library_forward_peak_bytes(layers: Sequence[LayerCost], partition: Partition, recompute: str,
                               n_mb: int) -> float:
    """The largest forward-stage peak of the partition."""
    return max((library_forward_stage_peak_bytes(layers, partition, s, recompute, n_mb)
                for s in range(len(partition.fwd))), default=0.0)
