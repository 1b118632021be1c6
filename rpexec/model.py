"""A real decoder in torch, cut into pipeline layers exactly as rpsim counts them: 0 = embedding,
1..L = transformer layers (RMSNorm, GQA attention with RoPE or DeepSeek's multi-head latent attention,
SwiGLU MLP or top-k MoE with optional shared experts), L+1 = head (final RMSNorm, LM head, cross-entropy).
Each layer holds exactly the parameters rpsim.costs.gemms counts. Gemma-2 is built with its 4 norms but
SwiGLU, SiLU and plain RMSNorm gains (its shapes, not its activation function). Layers hold no buffers, so
torch.func.functional_call can run any of them on weights uploaded elsewhere."""
from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from rpexec.chunked_loss import chunked_cross_entropy
from rpsim.specs import ModelSpec

ROPE_THETA = 10000.0
NORM_EPS = 1e-6


class RMSNorm(nn.Module):
    """Zhang & Sennrich 2019; computed in fp32 as Llama does."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's rms_norm (fused on CUDA): x * rsqrt(mean(x^2) + eps) * weight, here in fp32
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), NORM_EPS).to(x.dtype)


@functools.lru_cache(maxsize=64)
def rope_tables(s: int, d: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, [s, d/2], made once per shape and device instead of per call
    (they were 7 of a layer's ~50 kernel launches, and small models are launch-bound)."""
    inv = ROPE_THETA ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
    angles = torch.arange(s, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021), half-split layout as in Llama; x: [b, heads, s, d]."""
    s, d = x.shape[-2], x.shape[-1]
    cos, sin = rope_tables(s, d, x.device, x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def rotate_and_repeat(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      n_rep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The projections' [b, s, heads, d] views as SDPA's [b, heads, s, d] inputs: transposed (a view),
    RoPE on q and k, k and v repeated n_rep times to the query heads (GQA). Its kernels read strided
    tensors, slower than contiguous ones: `rpexec calibrate` times this function for rpsim's strided rate
    (rpsim.costs.layer_costs.strided_elementwise_bytes)."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    q, k = rope(q), rope(k)
    return q, k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """SDPA's [b, heads, s, d] output as o_proj's [b, s, heads * d] input: a copy into that layout."""
    b, heads, s, d = y.shape
    return y.transpose(1, 2).reshape(b, s, heads * d)


class Attention(nn.Module):
    def __init__(self, m: ModelSpec) -> None:
        super().__init__()
        self.m = m
        self.q_proj = nn.Linear(m.hidden, m.q_width, bias=m.qkv_bias)
        self.k_proj = nn.Linear(m.hidden, m.kv_width, bias=m.qkv_bias)
        self.v_proj = nn.Linear(m.hidden, m.kv_width, bias=m.qkv_bias)
        self.o_proj = nn.Linear(m.q_width, m.hidden, bias=False)
        self.q_norm = RMSNorm(m.head_dim) if m.qk_norm else None
        self.k_norm = RMSNorm(m.head_dim) if m.qk_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        m = self.m
        q = self.q_proj(x).view(b, s, m.n_heads, m.head_dim)
        k = self.k_proj(x).view(b, s, m.n_kv_heads, m.head_dim)
        v = self.v_proj(x).view(b, s, m.n_kv_heads, m.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = rotate_and_repeat(q, k, v, m.n_heads // m.n_kv_heads)
        return self.o_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True)))


class LatentAttention(nn.Module):
    """Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434, Sec. 2.1, Eq. 9-19): keys and values
    come from one normalised latent c_KV (kv_lora_rank wide) through one up-projection; RoPE rides on a
    separate qk_rope_head_dim part of each query head and on one RoPE key shared by all heads; queries come
    from h directly or, with q_lora_rank, through their own normalised latent."""

    def __init__(self, m: ModelSpec) -> None:
        super().__init__()
        self.m = m
        if m.q_lora_rank:
            self.q_a_proj = nn.Linear(m.hidden, m.q_lora_rank, bias=False)
            self.q_a_norm = RMSNorm(m.q_lora_rank)
            self.q_b_proj = nn.Linear(m.q_lora_rank, m.q_width, bias=False)
        else:
            self.q_proj = nn.Linear(m.hidden, m.q_width, bias=False)
        self.kv_a_proj = nn.Linear(m.hidden, m.kv_lora_rank + m.qk_rope_head_dim, bias=False)
        self.kv_a_norm = RMSNorm(m.kv_lora_rank)
        self.kv_b_proj = nn.Linear(m.kv_lora_rank, m.n_heads * (m.qk_nope_head_dim + m.value_dim), bias=False)
        self.o_proj = nn.Linear(m.attn_out_width, m.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        m = self.m
        q = self.q_b_proj(self.q_a_norm(self.q_a_proj(x))) if m.q_lora_rank else self.q_proj(x)
        q_nope, q_rope = q.view(b, s, m.n_heads, m.head_dim).transpose(1, 2).split(
            [m.qk_nope_head_dim, m.qk_rope_head_dim], dim=-1)
        latent, k_rope = self.kv_a_proj(x).split([m.kv_lora_rank, m.qk_rope_head_dim], dim=-1)
        kv = self.kv_b_proj(self.kv_a_norm(latent)).view(b, s, m.n_heads, m.qk_nope_head_dim + m.value_dim)
        k_nope, v = kv.transpose(1, 2).split([m.qk_nope_head_dim, m.value_dim], dim=-1)
        k_rope = rope(k_rope.view(b, 1, s, m.qk_rope_head_dim)).expand(b, m.n_heads, s, m.qk_rope_head_dim)
        q = torch.cat([q_nope, rope(q_rope)], dim=-1)
        k = torch.cat([k_nope, k_rope], dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(head_dim), as DeepSeek
        return self.o_proj(merge_heads(y))


class SwiGLU(nn.Module):
    """Shazeer 2020: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, width, bias=False)
        self.up_proj = nn.Linear(hidden, width, bias=False)
        self.down_proj = nn.Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """Top-k routed experts (Shazeer et al. 2017; Qwen3-MoE): softmax over all experts, keep the top k,
    renormalise their weights (unless renormalize_topk is off, as in DeepSeek-V2), sum the chosen experts'
    SwiGLU outputs; DeepSeekMoE's shared experts (DeepSeek-V2 Sec. 2.2.1, Eq. 20) see every token, as one
    SwiGLU n_shared_experts · mlp_width wide."""

    def __init__(self, m: ModelSpec) -> None:
        super().__init__()
        self.k = m.n_active_experts
        self.renormalize = m.renormalize_topk
        self.router = nn.Linear(m.hidden, m.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(m.hidden, m.mlp_width) for _ in range(m.n_experts))
        self.shared = SwiGLU(m.hidden, m.n_shared_experts * m.mlp_width) if m.n_shared_experts else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        probs = F.softmax(self.router(flat).float(), dim=-1)
        weight, chosen = probs.topk(self.k, dim=-1)
        if self.renormalize:
            weight = weight / weight.sum(-1, keepdim=True)
        weight = weight.to(x.dtype)
        out = self.shared(flat) if self.shared is not None else torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]) * weight[rows, slot, None])
        return out.view_as(x)


class DecoderLayer(nn.Module):
    """Transformer layer `index`: a MoE model's dense_layers get one dense MLP (DeepSeek's
    first_k_dense_replace, Qwen3-MoE's mlp_only_layers); with 4 norms (Gemma-2) each sublayer's output is
    normalised too before the residual add."""

    def __init__(self, m: ModelSpec, index: int) -> None:
        super().__init__()
        self.input_norm = RMSNorm(m.hidden)
        self.attn: nn.Module = LatentAttention(m) if m.is_mla else Attention(m)
        self.post_attn_norm = RMSNorm(m.hidden)
        self.attn_out_norm = RMSNorm(m.hidden) if m.norms_per_layer == 4 else None
        self.mlp_out_norm = RMSNorm(m.hidden) if m.norms_per_layer == 4 else None
        if m.is_moe_layer(index):
            self.mlp: nn.Module = MoE(m)
        else:
            self.mlp = SwiGLU(m.hidden, m.dense_mlp_width if m.is_moe else m.mlp_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.input_norm(x))
        x = x + (self.attn_out_norm(a) if self.attn_out_norm is not None else a)
        f = self.mlp(self.post_attn_norm(x))
        return x + (self.mlp_out_norm(f) if self.mlp_out_norm is not None else f)


class Embedding(nn.Module):
    def __init__(self, m: ModelSpec) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(m.vocab, m.hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)


class Head(nn.Module):
    """Final norm, LM head and mean token cross-entropy. forward(hidden, labels) -> scalar loss.
    loss_chunk_tokens > 0 computes the loss that many tokens at a time (rpexec.chunked_loss)."""

    def __init__(self, m: ModelSpec, loss_chunk_tokens: int = 0) -> None:
        super().__init__()
        self.norm = RMSNorm(m.hidden)
        self.lm_head = nn.Linear(m.hidden, m.vocab, bias=False)
        self.loss_chunk_tokens = loss_chunk_tokens

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss_chunk_tokens:
            return chunked_cross_entropy(self.norm(x), self.lm_head.weight, labels, self.loss_chunk_tokens)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1))


def skeleton_layers(m: ModelSpec, loss_chunk_tokens: int = 0) -> list[nn.Module]:
    """Parameterless copies (meta tensors) for torch.func.functional_call. functional_call swaps a
    module's parameters in place while it runs, so each device's compute lane needs its own skeleton."""
    with torch.device("meta"):
        return [Embedding(m), *[DecoderLayer(m, i) for i in range(m.n_layers)], Head(m, loss_chunk_tokens)]


def build_layers(m: ModelSpec, seed: int = 0) -> list[nn.Module]:
    """The pipeline layers, deterministically initialised from `seed` (normal(0, 0.02) weights as in
    GPT-2 / Llama, with output projections scaled by 1/sqrt(2L), GPT-2 Sec. 2.3). Each tensor draws from
    its own generator, seeded by (seed, its index), so tensors fill in parallel with the same result on
    any number of threads; a 2.8B model took over a minute to build serially."""
    # Built on the meta device, then given uninitialised storage: nn.Linear's own kaiming init, which
    # every weight would overwrite below, was 3/4 of the build time.
    layers = [layer.to_empty(device="cpu") for layer in skeleton_layers(m)]
    params = [(name, p) for layer in layers for name, p in layer.named_parameters()]

    def fill(index: int) -> None:
        name, p = params[index]
        with torch.no_grad():
            if name.endswith(".bias"):
                p.zero_()
                return
            if name.endswith("norm.weight") or p.dim() == 1:
                p.fill_(1.0)
                return
            std = 0.02 / math.sqrt(2 * m.n_layers) if name.split(".")[-2] in ("o_proj", "down_proj") else 0.02
            p.normal_(0.0, std, generator=torch.Generator().manual_seed(seed * 1_000_003 + index))

    with ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(len(params))))
    return layers
