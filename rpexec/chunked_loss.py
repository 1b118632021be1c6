"""LM head + mean token cross-entropy without materialising the full [tokens, vocab] logits.

Forward computes the logits one chunk of tokens at a time and keeps only each token's log-sum-exp (4 B
per token); backward recomputes each chunk's logits and turns them into the softmax gradient
(softmax - onehot) / n, which feeds the two GEMMs of the LM head. Peak extra memory is one chunk's
logits instead of all of them (2 GiB fp32 for 16k tokens x 32k vocab), at the price of one more
logits GEMM in backward. This is the technique of Liger-Kernel's fused linear cross-entropy and
Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language Models" (arXiv 2411.09009), done with
plain torch ops per chunk."""
from __future__ import annotations

from typing import Any

import torch


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        n = h.shape[0]
        acc = torch.promote_types(h.dtype, torch.float32)  # fp16/bf16 logits are reduced in fp32
        lse = torch.empty(n, dtype=acc, device=h.device)
        total = torch.zeros((), dtype=acc, device=h.device)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            logits = (h[lo:hi] @ weight.t()).to(acc)
            lse[lo:hi] = torch.logsumexp(logits, dim=-1)
            total += (lse[lo:hi] - logits.gather(1, labels[lo:hi, None]).squeeze(1)).sum()
        ctx.save_for_backward(h, weight, labels, lse)
        ctx.chunk = chunk
        return total / n

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, weight, labels, lse = ctx.saved_tensors
        n = h.shape[0]
        grad_h = torch.empty_like(h)
        acc = lse.dtype
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        scale = grad_loss.to(acc) / n
        for lo in range(0, n, ctx.chunk):
            hi = min(n, lo + ctx.chunk)
            probs = torch.exp((h[lo:hi] @ weight.t()).to(acc) - lse[lo:hi, None])
            probs[torch.arange(hi - lo, device=h.device), labels[lo:hi]] -= 1.0
            dlogits = (probs * scale).to(h.dtype)
            grad_h[lo:hi] = dlogits @ weight
            grad_w += (dlogits.t() @ h[lo:hi]).to(acc)
        return grad_h, grad_w.to(weight.dtype), None, None


def chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """Mean cross-entropy of softmax(h @ weight.T) against labels; h: [..., hidden], labels: [...]."""
    flat = h.reshape(-1, h.shape[-1])
    return ChunkedLinearCrossEntropy.apply(flat, weight, labels.reshape(-1), chunk_tokens)
