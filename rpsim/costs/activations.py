"""Activation bytes saved for backward, per microbatch, without recomputation.

RoundPipe paper (arXiv 2604.27085), Sec. 3, with FlashAttention and SwiGLU:
(12 + 4k/a)·s·b·h + 6·s·b·m·E_act bytes per layer in fp16. The 12·sbh term is six h-wide tensors
(layer input, norm output, q, attention output, residual, second norm output) and 4k/a·sbh is k and v;
with q_width = a·d != h (Qwen3-32B) we use the real widths: 2·T·(4h + 2·q_width + 2·kv_width).
The same accounting, tensor by tensor, covers the other layer kinds: MLA (DeepSeek-V2, arXiv 2405.04434,
Eq. 9-19) also saves its latents c_KV (with the RoPE key, the norm's input) and norm(c_KV) (kv_b's input),
and with a low-rank query c_Q and norm(c_Q); Gemma-2's two extra norms each save their h-wide input;
shared experts save 3 tensors of their width like the routed ones.
"""
from __future__ import annotations

from rpsim.specs.model import ModelSpec
from rpsim.specs.training import TrainingSpec


def attention_saved_width(model: ModelSpec) -> int:
    """Elements per token that attention and the norms keep for backward."""
    norms_and_residual = 4 * model.hidden + (model.norms_per_layer - 2) * model.hidden
    qkv_and_output = model.q_width + model.kv_width + model.v_width + model.attn_out_width
    latents = 0
    if model.is_mla:
        latents = (model.kv_lora_rank + model.qk_rope_head_dim) + model.kv_lora_rank + 2 * model.q_lora_rank
    return norms_and_residual + qkv_and_output + latents


def mlp_width_per_token(model: ModelSpec, index: int) -> int:
    """Total SwiGLU width a token passes through in layer `index` (all its experts)."""
    if not model.is_moe:
        return model.mlp_width
    if not model.is_moe_layer(index):
        return model.dense_mlp_width
    return model.mlp_width * (model.n_active_experts + model.n_shared_experts)


def layer_activation_bytes(model: ModelSpec, train: TrainingSpec, index: int) -> float:
    t = train.mb_tokens
    return 2.0 * t * attention_saved_width(model) + 6.0 * t * mlp_width_per_token(model, index)


def head_activation_bytes(model: ModelSpec, train: TrainingSpec) -> float:
    """Norm input and output (fp16) plus the logits in fp16 and their fp32 softmax (2 + 4 bytes) of every
    token, or, with a chunked loss, of one chunk of tokens plus each token's fp32 log-sum-exp."""
    t = train.mb_tokens
    norm = 2.0 * 2 * t * model.hidden
    if train.loss_chunk_tokens:
        return norm + 4.0 * t + 6.0 * min(t, train.loss_chunk_tokens) * model.vocab
    return norm + 6.0 * t * model.vocab
