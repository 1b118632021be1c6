"""The single-device, non-pipelined reference: the whole model over every microbatch of iteration 0,
each microbatch's mean loss weighted 1 / n_mb, gradients accumulated; and the comparison with a run."""
from __future__ import annotations

import torch

from rpexec.model import build_layers
from rpexec.session import DTYPES, batch_fn
from rpsim.specs import ModelSpec

# assert_close tolerances per compute dtype: fp32 differs only by summation order across microbatches
# and jobs; half precision rounds every activation (torch.testing's defaults are 1.3e-6 / 1.6e-2 rtol).
TOLERANCES = {"fp32": (1e-4, 1e-6), "bf16": (5e-2, 5e-3), "fp16": (2e-2, 1e-3), "fp16-acc16": (2e-2, 1e-3)}


def reference_grads(model: ModelSpec, seq: int, mb_size: int, n_mb: int, seed: int, dtype: str, device: str
                    ) -> tuple[float, dict[int, dict[str, torch.Tensor]]]:
    layers = [layer.to(device=device, dtype=DTYPES[dtype]) for layer in build_layers(model, seed)]
    get = batch_fn(model, seq, mb_size, seed)
    total = 0.0
    for m in range(n_mb):
        ids, labels = get(m, 0)
        x = layers[0](ids.to(device))
        for layer in layers[1:-1]:
            x = layer(x)
        loss = layers[-1](x, labels.to(device))
        (loss / n_mb).backward()
        total += float(loss.detach()) / n_mb
    grads = {i: {n: p.grad.detach().float().cpu() for n, p in layer.named_parameters()}
             for i, layer in enumerate(layers)}
    return total, grads


def compare_grads(ours: dict[int, dict[str, torch.Tensor]], ref: dict[int, dict[str, torch.Tensor]], dtype: str
                  ) -> list[str]:
    """Every gradient of every layer must match; returns the mismatches (empty when all match)."""
    rtol, atol = TOLERANCES[dtype]
    problems = []
    for layer, grads in ref.items():
        if layer not in ours:
            problems.append(f"layer {layer}: no gradient was captured (its optimizer step never ran)")
            continue
        for name, g in grads.items():
            try:
                torch.testing.assert_close(ours[layer][name].float().cpu(), g, rtol=rtol, atol=atol)
            except AssertionError as e:
                problems.append(f"layer {layer} {name}: {str(e).splitlines()[0]} {str(e).splitlines()[-1]}")
    return problems
