"""Assembles per-pipeline-layer costs: embedding, each transformer layer, head (final norm + LM head + loss).

FLOP conventions: backward = 2 x forward for trainable GEMMs (dgrad + wgrad; Narayanan et al. 2021,
"Efficient Large-Scale Language Model Training", Sec. 5.1), 1 x for frozen ones (dgrad only, LoRA);
recompute = one more forward. Model states for full fine-tuning with mixed-precision Adam: 2 (fp16
weights) + 2 (fp16 grads) + 12 (fp32 master, m, v) = 16 bytes per parameter (ZeRO, Rajbhandari et al.
2020, Sec. 3.1).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from rpsim.costs import roofline
from rpsim.costs.activations import (
    head_activation_bytes,
    layer_activation_bytes,
    layer_backward_extra_bytes,
    layer_forward_work_bytes,
    mlp_width_per_token,
)
from rpsim.costs.gemms import (
    Gemm,
    attention_flops,
    layer_gemms,
    layer_params,
    layer_tensor_params,
    lora_params,
    lora_tensor_params,
)
from rpsim.costs.library_loss import CE_FORWARD_BYTES_PER_LOGIT, chunked_loss_times
from rpsim.costs.rpexec_loss import FORWARD_BYTES_PER_LOGIT as RPEXEC_FORWARD_BYTES_PER_LOGIT
from rpsim.costs.rpexec_loss import rpexec_chunked_head_times_s
from rpsim.specs.gpu import GPUSpec
from rpsim.specs.model import ModelSpec
from rpsim.specs.training import TrainingSpec

WEIGHT_BYTES_PER_PARAM = 2  # fp16/bf16 weights on the GPU and in pinned host memory
GRAD_BYTES_PER_PARAM = 2
OPTIM_BYTES_PER_PARAM = 12  # fp32 master copy + Adam m + v


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str  # embed | layer | head
    params: int  # unique parameters (a tied head counts none of the embedding)
    active_params: int  # MoE: active experts only
    trainable_params: int
    weight_bytes: float  # what a GPU must hold to run it (a tied head holds the embedding matrix too)
    grad_bytes: float
    optim_bytes: float
    forward_flops: float
    backward_flops: float  # excludes recompute
    recompute_flops: float
    activation_bytes: float  # saved for backward per microbatch without recomputation
    input_bytes: float  # the layer's input activation per microbatch (what recompute saves)
    hbm_bytes: float  # DRAM traffic of one forward
    forward_s: float
    backward_s: float  # excludes recompute
    recompute_s: float
    # Gradients its backward holds at its peak on top of the saved activations still alive (the head's
    # loss transient is inside its activation_bytes: it runs first in a backward, when all are alive).
    backward_extra_bytes: float = 0.0
    # The most its forward holds at once without grad (a recomputed plan's F); None: activation_bytes.
    forward_work_bytes: float | None = None
    # The sizes of its trainable parameter tensors, which the host optimizer steps one by one (their cache
    # residency sets its DRAM traffic: rpsim.costs.cpu_optimizer); empty: one tensor of trainable_params.
    trainable_tensor_params: tuple[int, ...] = ()

    @property
    def optimizer_tensors(self) -> tuple[int, ...]:
        return self.trainable_tensor_params or (self.trainable_params,)

    @property
    def forward_transient_bytes(self) -> float:
        return self.activation_bytes if self.forward_work_bytes is None else self.forward_work_bytes


@dataclass(frozen=True)
class ModelCosts:
    layers: tuple[LayerCost, ...]
    mb_tokens: int
    notes: tuple[str, ...] = ()

    @property
    def total_params(self) -> int:
        return sum(c.params for c in self.layers)

    @property
    def active_params(self) -> int:
        return sum(c.active_params for c in self.layers)

    def with_layers(self, layers: tuple[LayerCost, ...], note: str | None = None) -> ModelCosts:
        return replace(self, layers=layers, notes=self.notes + ((note,) if note else ()))


def model_costs(model: ModelSpec, train: TrainingSpec, gpu: GPUSpec) -> ModelCosts:
    layers = (embedding_cost(model, train, gpu),
              *[transformer_layer_cost(model, train, gpu, i) for i in range(model.n_layers)],
              head_cost(model, train, gpu))
    return ModelCosts(layers=layers, mb_tokens=train.mb_tokens)


def _states(params_stored: int, trainable: int) -> tuple[float, float, float]:
    return (params_stored * WEIGHT_BYTES_PER_PARAM, trainable * GRAD_BYTES_PER_PARAM,
            trainable * OPTIM_BYTES_PER_PARAM)


def transformer_layer_cost(model: ModelSpec, train: TrainingSpec, gpu: GPUSpec, index: int) -> LayerCost:
    gemms = layer_gemms(model, train, index)
    attn = attention_flops(model, train)
    fwd_gemm = sum(g.flops for g in gemms)
    bwd_gemm = sum(g.flops * (2 if g.trainable else 1) for g in gemms)
    p = train.precision
    fwd_gemm_s = sum(roofline.gemm_time_s(g, gpu, p) for g in gemms)
    bwd_gemm_s = sum(roofline.gemm_backward_time_s(g, gpu, p) for g in gemms)
    contiguous = contiguous_elementwise_bytes(model, train, index)
    strided = strided_elementwise_bytes(model, train)
    fwd_s = (fwd_gemm_s + roofline.attention_time_s(attn, gpu, p, False)
             + roofline.elementwise_time_s(contiguous, gpu, 10, strided, backward=False))
    bwd_s = (bwd_gemm_s + roofline.attention_time_s(2 * attn, gpu, p, True)
             + roofline.elementwise_time_s(2 * contiguous, gpu, 14, 2 * strided, backward=True))
    n_params = layer_params(model, index)
    base_trainable = n_params if train.mode == "full" else 0
    adapters = lora_params(model, train, index) if train.mode == "lora" else 0
    weights, grads, optim = _states(n_params + adapters, base_trainable + adapters)
    return LayerCost(
        name=f"layer.{index}", kind="layer", params=n_params + adapters,
        active_params=layer_params(model, index, active_only=True) + adapters, trainable_params=base_trainable + adapters,
        weight_bytes=weights, grad_bytes=grads, optim_bytes=optim,
        forward_flops=fwd_gemm + attn, backward_flops=bwd_gemm + 2 * attn, recompute_flops=fwd_gemm + attn,
        activation_bytes=layer_activation_bytes(model, train, index), input_bytes=2.0 * train.mb_tokens * model.hidden,
        hbm_bytes=sum(roofline.gemm_bytes(g) for g in gemms) + contiguous + strided,
        forward_s=fwd_s, backward_s=bwd_s, recompute_s=fwd_s,
        backward_extra_bytes=layer_backward_extra_bytes(model, train, index),
        forward_work_bytes=layer_forward_work_bytes(model, train, index),
        trainable_tensor_params=((layer_tensor_params(model, index) if base_trainable else ())
                                 + (lora_tensor_params(model, train, index) if adapters else ())),
    )


def contiguous_elementwise_bytes(model: ModelSpec, train: TrainingSpec, index: int) -> float:
    """DRAM bytes of a layer's memory-bound kernels over contiguous tensors in an eager PyTorch decoder
    (rpexec.model; Hugging Face's Llama runs the same kernels or more), counted per kernel as reads +
    writes of its tensors; torch runs most of them vectorised, near the device copy rate (RMSNorm's bf16 ->
    fp32 widening copy is not vectorised and runs at about half of it on an H200: notes-strided.md):
    - RMSNorms in fp32: widen (2 + 4 B per element), the fused norm (4 + 4), narrow (4 + 2): 20 B over h
      for each of the layer's norms_per_layer, and over MLA's latents (c_KV, and c_Q with q_lora_rank);
    - 2 residual adds (read 2, write 1) over h; SwiGLU's silu (read, write) and product (read 2, write
      1) over every expert width a token passes (shared experts included); and MoE token permutation in
      and out.
    Backward moves about twice these bytes (each kernel's gradient reads its saved inputs and the
    incoming gradient and writes one), as the callers count it."""
    t, h, b = train.mb_tokens, model.hidden, roofline.BYTES_PER_ELEMENT
    norms = 10 * t * (model.norms_per_layer * h + model.kv_lora_rank + model.q_lora_rank)  # 20 B = 10 elements
    residuals = 2 * 3 * t * h
    swiglu = 5 * t * mlp_width_per_token(model, index)
    permute = 4 * t * h * model.n_active_experts if model.is_moe_layer(index) else 0
    return b * (norms + residuals + swiglu + permute)


def strided_elementwise_bytes(model: ModelSpec, train: TrainingSpec) -> float:
    """DRAM bytes of a layer's memory-bound kernels that torch runs over strided (non-contiguous) tensors,
    read + written, in one forward of rpexec.model's attention (its rotate_and_repeat and merge_heads);
    on an H200 they run at 0.2-0.35 of the device copy rate (benchmarks/notes-strided.md), so a calibrated
    GPU prices them at their own measured rate (GPUSpec.strided_elementwise_bytes_per_s):
    - RoPE, half-split, on q and k transposed to [b, heads, s, d]: four multiplies of a strided half, a
      subtract and an add of halves, and the concatenation: 9 element passes, 18 B over q_width and over
      kv_width (MLA: over each head's RoPE part of q and the one shared RoPE key);
    - GQA's repeat of k and v to the query heads (read kv_width, write q_width, each; MLA instead
      concatenates the RoPE and non-RoPE parts of q and of k, the same bytes) and the copy that makes the
      attention output contiguous for o_proj (attn_out_width): 2 B each way.
    Backward is counted as twice these bytes, as for the contiguous kernels; the calibrated backward rate
    is measured against that count."""
    t, b = train.mb_tokens, roofline.BYTES_PER_ELEMENT
    qw, kw = model.q_width, model.kv_width
    rope = 9 * t * ((model.n_heads + 1) * model.qk_rope_head_dim if model.is_mla else qw + kw)
    gqa_and_layout = 2 * t * (kw + qw) + 2 * t * model.attn_out_width
    return b * (rope + gqa_and_layout)


def embedding_cost(model: ModelSpec, train: TrainingSpec, gpu: GPUSpec) -> LayerCost:
    t, h = train.mb_tokens, model.hidden
    n_params = model.vocab * h
    trainable = n_params if train.mode == "full" else 0
    weights, grads, optim = _states(n_params, trainable)
    out_bytes = 2.0 * t * h
    fwd_s = roofline.elementwise_time_s(2 * out_bytes, gpu, 1)  # gather rows, write output
    return LayerCost(
        name="embed", kind="embed", params=n_params, active_params=n_params, trainable_params=trainable,
        weight_bytes=weights, grad_bytes=grads, optim_bytes=optim, forward_flops=0.0, backward_flops=0.0,
        recompute_flops=0.0, activation_bytes=8.0 * t, input_bytes=8.0 * t, hbm_bytes=2 * out_bytes,
        forward_s=fwd_s, backward_s=(2 * fwd_s if trainable else 0.0), recompute_s=fwd_s,
        trainable_tensor_params=(trainable,) if trainable else (),
    )


def head_cost(model: ModelSpec, train: TrainingSpec, gpu: GPUSpec) -> LayerCost:
    """Final RMSNorm, LM head GEMM and cross-entropy, over the full logits or chunk by chunk; rpexec's
    chunked loss recomputes the logits GEMM in backward (rpsim.costs.rpexec_loss), the `roundpipe` library's
    (hf-fa2 with a chunk) runs each chunk's backward inside its forward (rpsim.costs.library_loss)."""
    t, h, v = train.mb_tokens, model.hidden, model.vocab
    frozen = train.mode == "lora"  # the RoundPipe paper's LoRA run freezes the LM head too
    g = Gemm("lm_head", t, v, h, trainable=not frozen)
    p = train.precision
    # The fp32 loss over full logits: widen (read 2, write 4 B), log-softmax (read 4, write 4); its backward
    # reads the saved log-probabilities and writes their gradient (8 B), then narrows it (4 + 2 B).
    loss_bytes = 14.0 * t * v
    if train.layer_impl == "hf-fa2" and train.loss_chunk_tokens:
        fwd_s, bwd_s, recompute_s = _library_chunked_head_times_s(model, train, gpu)
        loss_bytes = CE_FORWARD_BYTES_PER_LOGIT * t * v  # its forward's loss traffic
    elif train.layer_impl == "rpexec" and train.loss_chunk_tokens:
        fwd_s, bwd_s, recompute_s = rpexec_chunked_head_times_s(model, train, gpu)
        loss_bytes = RPEXEC_FORWARD_BYTES_PER_LOGIT * t * v  # its forward's loss traffic
    else:
        fwd_s = (roofline.gemm_time_s(g, gpu, p)
                 + roofline.elementwise_time_s(loss_bytes + 4.0 * t * h, gpu, 4))
        recomputed_logits_s = roofline.gemm_time_s(g, gpu, p) if train.loss_chunk_tokens else 0.0
        bwd_s = (roofline.gemm_backward_time_s(g, gpu, p) + recomputed_logits_s
                 + roofline.elementwise_time_s(loss_bytes + 8.0 * t * h, gpu, 4))
        recompute_s = fwd_s
    unique = h + (0 if model.tied_embeddings else v * h)
    trainable = 0 if frozen else unique
    weights, grads, optim = _states(h + v * h, 0 if frozen else h + v * h)
    optim = trainable * OPTIM_BYTES_PER_PARAM
    return LayerCost(
        name="head", kind="head", params=unique, active_params=unique, trainable_params=trainable,
        weight_bytes=weights, grad_bytes=grads, optim_bytes=optim, forward_flops=g.flops,
        backward_flops=g.flops * (1 if frozen else 2), recompute_flops=g.flops,  # model FLOPs (MFU)
        activation_bytes=head_activation_bytes(model, train), input_bytes=2.0 * t * h,
        hbm_bytes=roofline.gemm_bytes(g) + loss_bytes, forward_s=fwd_s, backward_s=bwd_s,
        recompute_s=recompute_s,
        trainable_tensor_params=() if frozen else (h,) + (() if model.tied_embeddings else (v * h,)),
    )


def _library_chunked_head_times_s(model: ModelSpec, train: TrainingSpec,
                                  gpu: GPUSpec) -> tuple[float, float, float]:
    """(forward_s, backward_s, recompute_s) of the head as the `roundpipe` library runs it (roundpipe 0.1.1
    models/function.py, ChunkedCompileLinearCrossEntropy): the loss's whole backward runs in whichever
    forward has grad enabled. With recompute, the plan's F runs without grad (GEMMs and loss forwards
    only) and the recompute before B with grad, so B = recompute + the gradient work + the autograd
    backward's scaling; the fused stage's FB (forward_s + backward_s) comes to the same total. Without
    recompute, F has grad and does it all. The final RMSNorm is priced as in the other heads (4 B of
    forward and 8 B of backward traffic per element)."""
    t, h = train.mb_tokens, model.hidden
    loss = chunked_loss_times(model, train, gpu)
    norm_fwd_s = roofline.elementwise_time_s(4.0 * t * h, gpu, 1)
    norm_bwd_s = roofline.elementwise_time_s(8.0 * t * h, gpu, 1)
    no_grad_forward_s = norm_fwd_s + loss.forward_s
    if train.recompute == "none":
        return norm_fwd_s + loss.with_grad_s, loss.backward_s + norm_bwd_s, no_grad_forward_s
    return no_grad_forward_s, loss.gradient_s + loss.backward_s + norm_bwd_s, no_grad_forward_s
