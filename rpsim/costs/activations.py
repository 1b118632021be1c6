"""Activation bytes saved for backward, per microbatch, without recomputation.

RoundPipe paper (arXiv 2604.27085), Sec. 3, with FlashAttention and SwiGLU:
(12 + 4k/a)·s·b·h + 6·s·b·m·E_act bytes per layer in fp16. The 12·sbh term is six h-wide tensors
(layer input, norm output, q, attention output, residual, second norm output) and 4k/a·sbh is k and v;
with q_width = a·d != h (Qwen3-32B) we use the real widths: 2·T·(4h + 2·q_width + 2·kv_width).
"""
from __future__ import annotations

from rpsim.specs.model import ModelSpec
from rpsim.specs.training import TrainingSpec


def layer_activation_bytes(model: ModelSpec, train: TrainingSpec) -> float:
    t = train.mb_tokens
    attention = 2.0 * t * (4 * model.hidden + 2 * model.q_width + 2 * model.kv_width)
    mlp = 6.0 * t * model.mlp_width * model.n_active_experts
    return attention + mlp


def head_activation_bytes(model: ModelSpec, train: TrainingSpec) -> float:
    """Norm input and output (fp16) plus the logits in fp16 and their fp32 softmax (2 + 4 bytes) of every
    token, or, with a chunked loss, of one chunk of tokens plus each token's fp32 log-sum-exp."""
    t = train.mb_tokens
    norm = 2.0 * 2 * t * model.hidden
    if train.loss_chunk_tokens:
        return norm + 4.0 * t + 6.0 * min(t, train.loss_chunk_tokens) * model.vocab
    return norm + 6.0 * t * model.vocab
