"""The host STEP's per-parameter loops, compiled by TorchScript so that each runs as one call that gives
up the GIL once, not once per torch op.

Why: every torch op releases the GIL while it runs and must take it back after. While a lane thread is
running Python (issuing a layer's kernels), that wait lasts up to the interpreter's switch interval
(5 ms), and a STEP over a decoder layer with 8 staged gradients is ~150 ops. Measured on an H200 host
(benchmarks/step_in_context.py, a llama-1.8b layer, 8 staged gradients): 77 ms alone either way; beside
one thread running Python, 1,846 ms with one op per parameter and 1,258 ms with these loops (AdamW's
own Python steps remain). In e03's async RoundPipe runs on one H200 the STEP beside GPU compute went
from 208 to 124 ms (llama-1.8b) and the iteration from 3.58 to 2.72 s; on a later lease the two-GPU
runs did not move beyond that lease's spread (benchmarks/notes-rpexec.md, session 6).

The arithmetic is the per-parameter loop HostParams.step had, op for op, so results are bit-identical:
the first staged gradient is widened into the fp32 gradient by copy_, each further one is widened into
scratch and added (a mixed-dtype add_ is ~7x slower than the widening copy, then an fp32 add). Each
parameter is finished before the next starts, so its fp32 gradient and scratch stay in cache across the
staged gradients: one foreach call per staged gradient over all parameters was 1.5-1.9x slower alone
(the same probe) and slower in e03's runs.
"""
from __future__ import annotations

import warnings

import torch

# torch 2.13 marks torch.jit.script deprecated in favour of torch.compile, which would compile these CPU
# loops with a C++ toolchain at run time (the GPU machines have none); the scripted loops are plain op
# sequences that TorchScript still runs as it always did. rpexec's tests run them on every CPU path.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)


@torch.jit.script
def accumulate_staged(grads: list[torch.Tensor], staged: list[list[torch.Tensor]],
                      scratch: list[torch.Tensor]) -> None:
    """grads[j] = sum over i of staged[i][j], widened to fp32 (zero when nothing is staged)."""
    for j in range(len(grads)):
        if len(staged) == 0:
            grads[j].zero_()
        for i in range(len(staged)):
            if i == 0:
                grads[j].copy_(staged[i][j])
            else:
                grads[j].add_(scratch[j].copy_(staged[i][j]))


@torch.jit.script
def copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """dst[j].copy_(src[j]) for every j (the compute-dtype refresh of the weights the GPUs upload)."""
    for j in range(len(dst)):
        dst[j].copy_(src[j])
