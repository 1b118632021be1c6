"""Activation bytes a GPU holds per microbatch, counted tensor by tensor from the code that runs the layers.

Which code runs them is a setting (`TrainingSpec.layer_impl`), because the counts differ by 1.5-2x:

- "rpexec": rpexec/model.py, the decoder rpexec runs and the benchmark also hands to the `roundpipe`
  library (benchmarks/bench_rpexec.py). Counted from torch's saved tensors (saved_tensors_hooks, checked in
  tests/test_activation_memory.py) with CUDA's fused rms_norm, which saves its fp32 input and rstd only.
- "hf-fa2": Hugging Face Llama / Qwen3 layers with FlashAttention-2 in fp16, what the RoundPipe authors ran
  (RoundPipe-artifact roundpipe/train.py: `_attn_implementation = "flash_attention_2"`, fp16 weights,
  `return_logits=False`, i.e. the library's chunked linear cross-entropy).

- "paper": the paper's formula, (12 + 4k/a)·sbh + 6·sbm·E_act (RoundPipe Sec. 3; Korthikanti et al. 2022),
  an idealised layer with fp16 norms and one copy of each tensor. Both real implementations keep more:
  fp32 norm inputs, and rpexec expands k and v to every query head before scaled_dot_product_attention.
  The same accounting, tensor by tensor, covers the other layer kinds in every setting: MLA (DeepSeek-V2,
  arXiv 2405.04434, Eq. 9-19) also saves its latents c_KV (with the RoPE key, the norm's input) and
  norm(c_KV) (kv_b's input), and with a low-rank query c_Q and norm(c_Q); Gemma-2's two extra norms save
  their inputs like the others; shared experts and dense layers of MoE models keep their own widths.
"""
from __future__ import annotations

from rpsim.specs.model import ModelSpec
from rpsim.specs.training import TrainingSpec

FP16 = 2.0
FP32 = 4.0
# The `roundpipe` library's chunked linear cross-entropy runs 4096 tokens at a time
# (roundpipe 0.1.1, models/function.py: TOKEN_CHUNK_SIZE).
LIBRARY_LOSS_CHUNK_TOKENS = 4096


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


def _mla_latents(model: ModelSpec) -> int:
    """Latent widths an MLA layer saves besides q, k, v and the output (0 for other attention)."""
    if not model.is_mla:
        return 0
    return (model.kv_lora_rank + model.qk_rope_head_dim) + model.kv_lora_rank + 2 * model.q_lora_rank


def layer_activation_bytes(model: ModelSpec, train: TrainingSpec, index: int) -> float:
    """Bytes transformer layer `index`'s forward saves for its backward, per microbatch."""
    per_token = {"rpexec": _rpexec_layer, "hf-fa2": _hf_fa2_layer, "paper": _paper_layer}[train.layer_impl]
    return train.mb_tokens * per_token(model, index)


def layer_forward_work_bytes(model: ModelSpec, train: TrainingSpec, index: int) -> float:
    """The most a transformer layer holds at once in a forward without grad (a recomputed plan's F: rpexec
    runs it under torch.no_grad; the `roundpipe` library's run_forward enables grad while training, which
    rpsim.costs.library_memory counts for e02): nothing is saved, temporaries die as soon as they are read. Its largest moment is the SwiGLU's product (silu(gate), up and their product,
    3 x 2·m per token and active expert), or, if wider, an RMSNorm's fp32 copy and fp32 result with its
    fp16 output (4h + 4h + 2h); plus the layer's output next to its input (2h)."""
    if train.layer_impl == "paper":
        return layer_activation_bytes(model, train, index)
    per_token = max(3 * FP16 * mlp_width_per_token(model, index), (2 * FP32 + FP16) * model.hidden)
    return train.mb_tokens * (per_token + FP16 * model.hidden)


def layer_backward_extra_bytes(model: ModelSpec, train: TrainingSpec, index: int) -> float:
    """What a transformer layer's backward holds beyond the saved activations still alive, at its peak:
    in the SwiGLU's product node autograd holds the product's gradient and computes both of its inputs'
    gradients (3 x 2·m per token) while only the down projection's saved input (2·m) has been freed. The
    same in rpexec's and in Hugging Face's MLP; the paper's formula counts saved tensors only."""
    if train.layer_impl == "paper":
        return 0.0
    return train.mb_tokens * 2 * FP16 * mlp_width_per_token(model, index)


def _paper_layer(m: ModelSpec, index: int) -> float:
    """The paper's count per token: six h-wide fp16 tensors (layer input, norm output, q, attention output,
    residual, second norm output) and k and v, with the real projection widths, the latents of MLA and
    Gemma-2's extra norms (attention_saved_width); SwiGLU 6 B per unit of width (3 fp16 tensors)."""
    return FP16 * attention_saved_width(m) + 6.0 * mlp_width_per_token(m, index)


def _routed(m: ModelSpec, index: int) -> bool:
    return m.is_moe and m.is_moe_layer(index)


def _rpexec_layer(m: ModelSpec, index: int) -> float:
    """Per token, rpexec/model.py DecoderLayer:
    - each RMSNorm: its fp32 input (x.float()) and its fp16 output (saved by the next GEMMs): 4h + 2h;
    - q_norm / k_norm (Qwen3): their fp32 inputs, 4·q_width + 4·kv_width (RoPE's products save cos/sin only);
    - SDPA (flash backend): q, k and v after repeat_interleave (each q_width wide), output: 4 x 2·q_width,
      plus an fp32 log-sum-exp per head;
    - o_proj's input: the transposed output reshaped, a copy: 2·q_width;
    - SwiGLU over its whole width (every active and shared expert): gate, silu(gate), up, their product:
      4 x 2 B per unit; a routed layer also keeps the gathered tokens and each expert's output for the
      routing weight (2h + 2h per active expert) and the router's fp32 probabilities;
    - MLA's latents (fp16), as in the paper's count."""
    norms = m.norms_per_layer * (FP32 + FP16) * m.hidden
    qk = FP32 * (m.q_width + m.kv_width) if m.qk_norm else 0.0
    attention = 4 * FP16 * m.q_width + FP32 * m.n_heads + FP16 * m.q_width
    mlp = 4 * FP16 * mlp_width_per_token(m, index)
    if _routed(m, index):
        mlp += m.n_active_experts * 2 * FP16 * m.hidden + FP32 * m.n_experts
    return norms + qk + attention + mlp + FP16 * _mla_latents(m)


def _hf_fa2_layer(m: ModelSpec, index: int) -> float:
    """Per token, transformers' LlamaDecoderLayer / Qwen3DecoderLayer with flash_attention_2, fp16:
    - each RMSNorm (LlamaRMSNorm): the fp32 input, the normalised fp16 tensor and the weighted output:
      4h + 2h + 2h;
    - q_norm / k_norm (Qwen3): the same over q and k: 8·(q_width + kv_width) minus the outputs RoPE does
      not save (2·(q_width + kv_width)): 6·(q_width + kv_width);
    - FlashAttention-2 takes grouped k and v as they are: q, k, v, output (o_proj reads the output as a
      view): 2·(q_width + kv_width + v_width + attn_out_width), plus an fp32 log-sum-exp per head;
    - SwiGLU over its whole width 4 x 2 B per unit; a routed layer keeps the gathered tokens per active
      expert (2h) and the router's fp32 probabilities; MLA's latents (fp16)."""
    norms = m.norms_per_layer * (FP32 + 2 * FP16) * m.hidden
    qk = 6.0 * (m.q_width + m.kv_width) if m.qk_norm else 0.0
    attention = FP16 * (m.q_width + m.kv_width + m.v_width + m.attn_out_width) + FP32 * m.n_heads
    mlp = 4 * FP16 * mlp_width_per_token(m, index)
    if _routed(m, index):
        mlp += m.n_active_experts * FP16 * m.hidden + FP32 * m.n_experts
    return norms + qk + attention + mlp + FP16 * _mla_latents(m)


def head_activation_bytes(model: ModelSpec, train: TrainingSpec) -> float:
    """The most the head (final norm, LM head, loss) holds at once per microbatch while its backward runs:
    what its forward saved plus the loss's largest transient."""
    t, h, v = train.mb_tokens, model.hidden, model.vocab
    chunk = min(t, train.loss_chunk_tokens) if train.loss_chunk_tokens else 0
    if train.layer_impl == "paper":  # fp16 norm input and output; fp16 logits and their fp32 softmax
        norm = 2 * FP16 * t * h
        return norm + (FP32 * t + 6.0 * chunk * v if chunk else 6.0 * t * v)
    if train.layer_impl == "rpexec":
        norm = (FP32 + FP16) * t * h  # fp32 input of the final RMSNorm, its output (the LM head's input)
        if not chunk:
            # F.cross_entropy(logits.float()): log_softmax saves its fp32 output (4 B / logit); backward
            # then holds it with nll_loss's fp32 gradient and log_softmax's fp32 input gradient at once:
            # 3 x 4 = 12 B per logit (the forward's peak is 2 + 4 + 4 = 10: fp16 logits, fp32 copy, output).
            return norm + 3 * FP32 * t * v
        # rpexec/chunked_loss.py saves each token's fp32 log-sum-exp and, in backward, holds the input
        # gradient (2·t·h) and an fp32 weight gradient (4·v·h). Per chunk its backward keeps the fp32
        # probabilities, their scaled fp32 copy and its fp16 cast (4 + 4 + 2 B per logit); then, with the
        # probabilities and the fp16 gradient left (6 B per logit), the weight-gradient GEMM's fp16
        # output and its fp32 cast (2·v·h + 4·v·h) on top of the accumulator.
        chunk_peak = max(10.0 * chunk * v + FP32 * v * h, 6.0 * chunk * v + (FP32 + FP16 + FP32) * v * h)
        return norm + FP32 * t + FP16 * t * h + chunk_peak
    norm = (FP32 + 2 * FP16) * t * h  # LlamaRMSNorm as in the layers
    if not chunk:
        # The library's HF loss (CompileForCausalLMLoss, torch.compile'd): fp16 logits saved, the fused
        # backward writes an fp16 gradient of the same size: 2 + 2 B per logit.
        return norm + 2 * FP16 * t * v
    # ChunkedCompileLinearForCausalLMLoss (roundpipe 0.1.1 models/function.py): forward runs each chunk's
    # logits, compiled cross-entropy and its backward at once and keeps only the input gradient (2·t·h) and
    # the fp16 LM-head weight gradient (2·v·h); a chunk holds its fp16 logits and their fp16 gradient.
    return norm + FP16 * t * h + FP16 * v * h + 2 * FP16 * chunk * v
