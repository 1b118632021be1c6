"""Cost-model formulas against closed forms and published figures."""
from __future__ import annotations

from dataclasses import replace

import pytest

from rpsim.catalog import load_gpu, load_model
from rpsim.costs import model_costs
from rpsim.costs.activations import layer_activation_bytes
from rpsim.specs import TrainingSpec
from rpsim.units import GiB

DENSE = ["llama-7b", "llama-13b", "llama-70b", "llama3-8b", "qwen3-8b", "qwen3-32b", "qwen3-1.7b"]


@pytest.mark.parametrize("name", DENSE)
def test_dense_training_flops_per_token_match_6n_plus_attention(name):
    """PaLM (Chowdhery et al. 2022), App. B: training FLOPs per token = 6N + 12·L·H·Q·T, where N excludes
    the input embedding (a lookup, not a matmul), H·Q is the attention width and T the sequence length.
    PaLM's attention term counts the full score matrix; a causal kernel computes half of it (FlashAttention-2,
    Sec. 4.1), which is what rpsim counts and times: 6·L·H·Q·T."""
    m = load_model(name)
    train = TrainingSpec(seq_len=2048, mb_size=2)
    costs = model_costs(m, train, load_gpu("rtx4090"))
    n_matmul = costs.total_params - (0 if m.tied_embeddings else m.vocab * m.hidden)
    if m.tied_embeddings:
        n_matmul = costs.total_params  # the tied matrix is used once, by the LM head
    expected = 6 * n_matmul + 6 * m.n_layers * m.q_width * train.seq_len
    ours = sum(c.forward_flops + c.backward_flops for c in costs.layers) / train.mb_tokens
    assert ours == pytest.approx(expected, rel=0.02)


def test_llama31_8b_activations_at_16k_tokens_are_68_gib():
    """RoundPipe paper, Sec. 3: Llama-3.1-8B needs 68 GiB of activations for 16k tokens without recompute
    (its formula: layer_impl "paper")."""
    m = load_model("llama3-8b")
    train = TrainingSpec(seq_len=16384, global_batch=1, mb_size=1, layer_impl="paper")
    per_layer = layer_activation_bytes(m, train, 0)
    assert per_layer * m.n_layers / GiB == pytest.approx(68.0, abs=0.05)


def test_backward_is_twice_forward_for_full_and_dgrad_only_for_frozen_base():
    m, gpu = load_model("llama3-8b"), load_gpu("rtx4090")
    full = model_costs(m, TrainingSpec(), gpu).layers[1]
    lora = model_costs(m, TrainingSpec(mode="lora", lora_rank=16), gpu).layers[1]
    assert full.backward_flops == pytest.approx(2 * full.forward_flops)
    assert full.recompute_flops == full.forward_flops
    assert lora.backward_flops < 1.2 * lora.forward_flops
    assert lora.trainable_params == 16 * sum(i + o for i, o in [(4096, 4096), (4096, 1024), (4096, 1024),
                                                                (4096, 4096), (4096, 14336), (4096, 14336),
                                                                (14336, 4096)])


def test_moe_flops_count_active_experts_and_bytes_count_all():
    m, gpu, train = load_model("qwen3-235b-a22b"), load_gpu("rtx4090"), TrainingSpec()
    layer = model_costs(m, train, gpu).layers[1]
    expert_fwd = 2 * train.mb_tokens * 3 * m.hidden * m.mlp_width
    assert layer.forward_flops > m.n_active_experts * expert_fwd
    assert layer.forward_flops < 2 * m.n_active_experts * expert_fwd
    assert layer.weight_bytes > 2 * m.n_experts * 3 * m.hidden * m.mlp_width


def test_attention_flops_grow_with_square_of_sequence_and_activations_linearly():
    m, gpu = load_model("llama3-8b"), load_gpu("rtx4090")
    short = model_costs(m, TrainingSpec(seq_len=1024, mb_size=4), gpu).layers[1]
    long = model_costs(m, TrainingSpec(seq_len=2048, mb_size=2), gpu).layers[1]  # same tokens
    attn = 2 * 2 * 2048**2 * m.q_width - 2 * 4 * 1024**2 * m.q_width  # causal: half the s x s matrix
    assert long.forward_flops - short.forward_flops == pytest.approx(attn)
    assert long.activation_bytes == short.activation_bytes


def test_times_follow_precision_peak():
    m, gpu = load_model("llama3-8b"), load_gpu("rtx4090")
    bf16 = model_costs(m, TrainingSpec(precision="bf16"), gpu).layers[1]
    acc16 = model_costs(m, TrainingSpec(precision="fp16-acc16"), gpu).layers[1]
    assert acc16.forward_s < bf16.forward_s
    assert bf16.forward_s > bf16.forward_flops / gpu.bf16_flops_per_s


def test_chunked_loss_holds_one_chunk_of_logits_and_recomputes_the_logits_gemm():
    """Llama-2-7B (vocab 32000, hidden 4096), 4 x 2048 tokens, rpexec's head: the full-logit loss holds
    12 B per logit at its backward's peak (fp32 log-softmax output, nll gradient, its input gradient); the
    1024-token chunked loss (rpexec/chunked_loss.py) holds each token's fp32 log-sum-exp, the input
    gradient and, at most, the fp32 weight gradient (4 v h) with one chunk's 10 B per logit."""
    model, gpu = load_model("llama-7b"), load_gpu("4090")
    t, h, v, c = 8192, 4096, 32000, 1024
    full = TrainingSpec(seq_len=2048, global_batch=4, mb_size=4)
    chunked = TrainingSpec(seq_len=2048, global_batch=4, mb_size=4, loss_chunk_tokens=c)
    norm = (4.0 + 2.0) * t * h  # the final RMSNorm's fp32 input and its fp16 output
    head_full = model_costs(model, full, gpu).layers[-1]
    head_chunked = model_costs(model, chunked, gpu).layers[-1]
    assert head_full.activation_bytes == norm + 12.0 * t * v
    chunk_peak = max(10.0 * c * v + 4.0 * v * h, 6.0 * c * v + 10.0 * v * h)
    assert head_chunked.activation_bytes == norm + 4.0 * t + 2.0 * t * h + chunk_peak
    assert head_chunked.activation_bytes < head_full.activation_bytes / 1.8  # the 10 v h GEMM-output peak
    assert head_chunked.backward_flops == head_full.backward_flops  # MFU counts model FLOPs only
    assert head_chunked.backward_s > head_full.backward_s


def test_library_chunked_loss_holds_fp16_chunk_logits_and_their_gradient():
    """hf-fa2 with a chunk: the roundpipe library's ChunkedCompileLinearForCausalLMLoss keeps the input
    gradient (2 t h) and the fp16 weight gradient (2 v h); a 4096-token chunk holds its fp16 logits and
    their fp16 gradient. Qwen3-1.7B at 13 x 2048 tokens: 3.4 GiB, less than its full fp16 logits
    alone (7.5 GiB)."""
    model, gpu = load_model("qwen3-1.7b"), load_gpu("4090")
    t, h, v = 13 * 2048, model.hidden, model.vocab
    train = TrainingSpec(seq_len=2048, global_batch=13, mb_size=13, layer_impl="hf-fa2", loss_chunk_tokens=4096)
    head = model_costs(model, train, gpu).layers[-1]
    assert head.activation_bytes == (4.0 + 2.0 + 2.0) * t * h + 2.0 * t * h + 2.0 * v * h + 4.0 * 4096 * v
    assert head.activation_bytes / GiB == pytest.approx(3.41, abs=0.01)


def test_library_chunked_loss_time_is_its_kernels_placed_where_the_library_runs_them():
    """hf-fa2 with a 4096-token chunk, priced as roundpipe 0.1.1's ChunkedCompileLinearCrossEntropy runs:
    Qwen3-1.7B at 13 x 2048 tokens is 6 chunks of 4096 and one of 2048. A forward without grad (F of a
    recomputed plan) runs each chunk's logits GEMM and its cross-entropy forward (2 B per logit); the
    recompute runs the same with grad and adds each chunk's backward (4 B per logit, the input- and
    weight-gradient GEMMs), the split's full-size input gradients (zeros for the other chunks, a
    concatenation) and from the second chunk on the additions into both accumulated gradients (6 B per
    element); the autograd backward scales both gradients (4 B per element). Without recompute the
    forward has grad and does it all; either way forward + backward is the same total."""
    from rpsim.costs import roofline
    from rpsim.costs.gemms import Gemm
    model, gpu = load_model("qwen3-1.7b"), load_gpu("4090")
    t, h, v, p = 13 * 2048, model.hidden, model.vocab, "fp16-acc16"
    chunks = [4096] * 6 + [2048]
    gemms = [Gemm("lm_head", c, v, h) for c in chunks]

    def spec(recompute: str) -> TrainingSpec:
        return TrainingSpec(seq_len=2048, global_batch=13, mb_size=13, precision=p, recompute=recompute,
                            layer_impl="hf-fa2", loss_chunk_tokens=4096)

    norm_f = roofline.elementwise_time_s(4.0 * t * h, gpu, 1)
    norm_b = roofline.elementwise_time_s(8.0 * t * h, gpu, 1)
    no_grad = sum(roofline.gemm_time_s(g, gpu, p) for g in gemms) + roofline.elementwise_time_s(2.0 * t * v, gpu, 7)
    split = sum(2.0 * (t - c) * h + 4.0 * t * h for c in chunks)
    gradient = (sum(roofline.gemm_backward_time_s(g, gpu, p) for g in gemms)
                + roofline.elementwise_time_s(4.0 * t * v + split + 6 * 6.0 * (t * h + v * h), gpu, 7 * 8 + 6 * 2))
    scale = roofline.elementwise_time_s(4.0 * (t * h + v * h), gpu, 2)
    head = model_costs(model, spec("stage"), gpu).layers[-1]
    assert head.forward_s == pytest.approx(norm_f + no_grad, rel=1e-12)
    assert head.recompute_s == head.forward_s
    assert head.backward_s == pytest.approx(gradient + scale + norm_b, rel=1e-12)
    eager = model_costs(model, spec("none"), gpu).layers[-1]
    assert eager.forward_s == pytest.approx(norm_f + no_grad + gradient, rel=1e-12)
    assert eager.backward_s == pytest.approx(scale + norm_b, rel=1e-12)
    assert eager.forward_s + eager.backward_s == pytest.approx(head.forward_s + head.backward_s, rel=1e-12)
    # Three GEMMs per chunk and 6 B per logit of loss traffic, where rpexec's chunked loss runs four GEMMs
    # and widens each logit to fp32 (66 B per logit): the library's head is the cheaper one.
    rpexec = model_costs(model, replace(spec("stage"), layer_impl="rpexec"), gpu).layers[-1]
    assert head.forward_s + head.backward_s < 0.8 * (rpexec.forward_s + rpexec.backward_s)


def test_rpexec_chunked_loss_time_is_its_kernels():
    """rpexec's chunked loss (rpexec/chunked_loss.py) at the benchmark's Llama-3-8B shape, 4 x 2048 tokens
    in 2048-token chunks: the forward runs each chunk's logits GEMM, their fp32 copy and torch.logsumexp
    (30 B per logit) after the final norm (4 B per element); the recompute is the forward again; the
    backward runs each chunk's logits GEMM again and both gradient GEMMs, 36 B per logit, the input
    gradient's row copies (4 B per element), the weight gradient's widening and fp32 addition per chunk
    (18 B per element) and its zeroing and final cast once (10 B), and the norm's backward (8 B)."""
    from rpsim.costs import roofline
    from rpsim.costs.gemms import Gemm
    model, gpu = load_model("llama3-8b"), load_gpu("h200")
    t, h, v, p, n = 4 * 2048, model.hidden, model.vocab, "fp16", 4
    train = TrainingSpec(seq_len=2048, global_batch=4, mb_size=4, precision=p, loss_chunk_tokens=2048)
    g = Gemm("lm_head", 2048, v, h)
    logits = n * roofline.gemm_time_s(g, gpu, p)
    forward = logits + roofline.elementwise_time_s(30.0 * t * v + 4.0 * t * h, gpu, 11 * n + 1)
    backward = (logits + n * roofline.gemm_backward_time_s(g, gpu, p)
                + roofline.elementwise_time_s(36.0 * t * v + 4.0 * t * h + (18.0 * n + 10.0) * v * h + 8.0 * t * h,
                                              gpu, 12 * n + 3))
    head = model_costs(model, train, gpu).layers[-1]
    assert head.forward_s == pytest.approx(forward, rel=1e-12)
    assert head.recompute_s == head.forward_s
    assert head.backward_s == pytest.approx(backward, rel=1e-12)
    # The per-logit passes are most of the difference from the full-logit loss's 14 + 14 B per logit.
    full = model_costs(model, replace(train, loss_chunk_tokens=0), gpu).layers[-1]
    assert head.forward_s + head.backward_s > full.forward_s + full.backward_s + roofline.gemm_time_s(
        Gemm("lm_head", t, v, h), gpu, p)


def test_loss_chunk_tokens_must_not_be_negative():
    with pytest.raises(Exception, match="loss_chunk_tokens must be 0"):
        TrainingSpec(loss_chunk_tokens=-1)
