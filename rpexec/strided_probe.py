"""`rpexec calibrate`'s strided elementwise probe: the rate of the memory-bound kernels torch runs over
strided tensors in a layer's attention (RoPE on the transposed q and k, GQA's repeat of k and v, the
layout copies), timed through rpexec.model's own rotate_and_repeat and merge_heads at transformer layers'
shapes, forward and backward.

Each rate is in the bytes rpsim counts for these kernels (rpsim.costs.layer_costs.strided_elementwise_bytes,
twice that for a backward) per second measured, so that rpsim's price of them at the probed shapes is the
measured time; the kernels' own traffic differs from that count (the backward moves less, notes-strided.md).
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from rpexec.calibrate import time_s
from rpexec.model import merge_heads, rotate_and_repeat
from rpsim.costs.layer_costs import strided_elementwise_bytes
from rpsim.specs import ModelSpec, TrainingSpec

# Llama-style layers at e03's microbatch of 4 x 2048 tokens: the 0.7B shape of the profiled run
# (benchmarks/notes-strided.md has its kernels' times from the trace, to check the probe against) and the
# Llama-3-8B shape; both GQA with 4 query heads per KV head, head_dim 128.
CUDA_SHAPES = (
    (ModelSpec(name="llama-0.7b layer", n_layers=1, hidden=2048, n_heads=16, n_kv_heads=4, head_dim=128,
               mlp_width=5632, vocab=32000), TrainingSpec(seq_len=2048, global_batch=4, mb_size=4)),
    (ModelSpec(name="llama3-8b layer", n_layers=1, hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128,
               mlp_width=14336, vocab=128256), TrainingSpec(seq_len=2048, global_batch=4, mb_size=4)),
)
# A CPU times the same functions at a shape a CI core runs in milliseconds.
CPU_SHAPES = (
    (ModelSpec(name="cpu probe layer", n_layers=1, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
               mlp_width=512, vocab=1024), TrainingSpec(seq_len=256, global_batch=1, mb_size=1)),
)
CUDA_INNER_CALLS = 10  # back-to-back calls per timing, so the host's synchronize is a small share
CPU_INNER_CALLS = 3  # a shared CI core: a few calls per timing smooth its scheduling


def shape_label(model: ModelSpec, train: TrainingSpec) -> str:
    return (f"{model.name}: b={train.mb_size} seq={train.seq_len} heads={model.n_heads} "
            f"kv_heads={model.n_kv_heads} head_dim={model.head_dim}")


def probe_shape_s(model: ModelSpec, train: TrainingSpec, device: torch.device, dtype: torch.dtype,
                  reps: int) -> tuple[float, float]:
    """(forward s, backward s) of rotate_and_repeat + merge_heads at one layer's shapes.

    The inputs are the projections' outputs as the layer has them, contiguous [b, s, heads * d] viewed as
    [b, s, heads, d], so the backward makes the q, k and v gradients contiguous as the layer's does; the
    gradients arriving from SDPA are contiguous [b, heads, s, d]. merge_heads' backward is a view (no
    kernel: the trace shows none), so its input takes no gradient here. The backward is timed alone, over
    graphs built beforehand, through autograd.grad (no accumulation into .grad, which the layer's inputs
    do not have either)."""
    b, s, d = train.mb_size, train.seq_len, model.head_dim
    heads, kv_heads = model.n_heads, model.n_kv_heads

    def leaf(width: int) -> torch.Tensor:
        return torch.randn(b, s, width, device=device, dtype=dtype).requires_grad_(True)

    leaves = (leaf(heads * d), leaf(kv_heads * d), leaf(kv_heads * d))
    y = torch.randn(b, heads, s, d, device=device, dtype=dtype)  # SDPA's output
    grads = tuple(torch.randn(b, heads, s, d, device=device, dtype=dtype) for _ in range(3))

    def attention_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = leaves
        return rotate_and_repeat(q.view(b, s, heads, d), k.view(b, s, kv_heads, d), v.view(b, s, kv_heads, d),
                                 heads // kv_heads)

    def forward() -> None:
        with torch.no_grad():
            attention_inputs()
            merge_heads(y)

    inner = CUDA_INNER_CALLS if device.type == "cuda" else CPU_INNER_CALLS
    forward_s = time_s(device, forward, reps, inner)

    def backward_once_s() -> float:
        graphs = [attention_inputs() for _ in range(inner)]
        _synchronize(device)
        t = time.perf_counter()
        for outputs in graphs:
            torch.autograd.grad(outputs, leaves, grads)
        _synchronize(device)
        return (time.perf_counter() - t) / inner

    backward_once_s()  # warm-up
    return forward_s, statistics.median(backward_once_s() for _ in range(reps))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def strided_elementwise_rates(device: torch.device, dtype: torch.dtype, reps: int) -> dict[str, Any]:
    """Forward and backward rates over the probed shapes together (counted bytes over measured time),
    and each shape's figures."""
    shapes = CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES
    rows = []
    for model, train in shapes:
        forward_s, backward_s = probe_shape_s(model, train, device, dtype, reps)
        rows.append({"shape": shape_label(model, train), "counted_bytes": strided_elementwise_bytes(model, train),
                     "forward_us": forward_s * 1e6, "backward_us": backward_s * 1e6})
    counted = sum(r["counted_bytes"] for r in rows)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"forward_gb_per_s": counted / sum(r["forward_us"] for r in rows) / 1e3,
            "backward_gb_per_s": 2 * counted / sum(r["backward_us"] for r in rows) / 1e3,
            "shapes": rows}
