"""The time of rpexec's chunked LM-head loss (rpexec/chunked_loss.py, `--loss-chunk-tokens`), kernel by
kernel, with the final RMSNorm around it.

What runs, per chunk of c tokens (v vocabulary, h hidden; the logits GEMMs write fp16, 2 B per logit,
priced by the roofline with each GEMM):
- forward: the logits GEMM (c, v, h); their fp32 copy (read 2, write 4 B per logit); torch.logsumexp,
  which ATen composes from amax (read 4), a subtraction (read 4, write 4), an in-place exp (read 4,
  write 4) and a sum (read 4): 30 B per logit in all, plus per-row gathers and sums;
- backward: the logits GEMM again; the fp32 copy (6 B); minus the saved log-sum-exp (8 B); exp (8 B);
  the labels' -1 (per row); the scale by the incoming gradient (8 B); the fp16 cast (read 4, write 2):
  36 B per logit; the input-gradient GEMM (c, h, v), whose output is copied into its rows of the input
  gradient (read 2, write 2 B per element); the weight-gradient GEMM (v, h, c), whose fp16 output is
  widened (read 2, write 4) and added into the fp32 accumulator (read 4 + 4, write 4): 18 B per weight
  element per chunk; once, the zeroed accumulator (write 4) and its final fp16 cast (read 4, write 2).

Measured on 2x H200 (session 9, the benchmark's fused last stages, `experiments/data/rpexec-bench/session9`):
with the loss priced as 28 B per logit and one logits GEMM more, FB ran 1.07x (2.8B, vocabulary 32K),
1.41x (Llama-3-8B shape, 128K) and 1.45x (14B, 32K) its prediction, F and B 0.92-1.06x: the per-logit
passes and the per-chunk weight-gradient accumulation were not counted.
"""
from __future__ import annotations

from rpsim.costs import roofline
from rpsim.costs.gemms import Gemm
from rpsim.costs.library_loss import chunk_sizes
from rpsim.specs.gpu import GPUSpec
from rpsim.specs.model import ModelSpec
from rpsim.specs.training import TrainingSpec

FORWARD_BYTES_PER_LOGIT = 30.0  # fp32 copy 6 + logsumexp 24
BACKWARD_BYTES_PER_LOGIT = 36.0  # fp32 copy 6, - lse 8, exp 8, scale 8, fp16 cast 6
WEIGHT_GRAD_BYTES_PER_ELEMENT_PER_CHUNK = 18.0  # widen the GEMM's fp16 output 6, add into fp32 12
WEIGHT_GRAD_BYTES_PER_ELEMENT_ONCE = 10.0  # zero the fp32 accumulator 4, cast it to fp16 6
INPUT_GRAD_COPY_BYTES_PER_ELEMENT = 4.0  # each chunk's GEMM output into its rows: read 2, write 2
NORM_FORWARD_BYTES_PER_ELEMENT = 4.0  # the final RMSNorm, as the other heads price it
NORM_BACKWARD_BYTES_PER_ELEMENT = 8.0
FORWARD_KERNELS_PER_CHUNK = 11  # GEMM aside: copy, amax, sub, exp_, sum, log_, add_, gather, sub, sum, add
# GEMMs aside: fp32 copy, sub, exp, arange, the labels' gather, sub and scatter, mul, fp16 copy, the input
# gradient's row copy, the weight gradient's widening and addition
BACKWARD_KERNELS_PER_CHUNK = 12


def rpexec_chunked_head_times_s(model: ModelSpec, train: TrainingSpec,
                                gpu: GPUSpec) -> tuple[float, float, float]:
    """(forward_s, backward_s, recompute_s) of rpexec's head with its chunked loss: the recompute before
    a backward runs the forward again; the backward recomputes each chunk's logits GEMM itself."""
    t, h, v = train.mb_tokens, model.hidden, model.vocab
    trainable = train.mode != "lora"
    p = train.precision
    chunks = chunk_sizes(t, train.loss_chunk_tokens)
    n = len(chunks)
    gemms = [Gemm("lm_head", c, v, h, trainable=trainable) for c in chunks]
    logits_s = sum(roofline.gemm_time_s(g, gpu, p) for g in gemms)
    forward_s = logits_s + roofline.elementwise_time_s(
        FORWARD_BYTES_PER_LOGIT * t * v + NORM_FORWARD_BYTES_PER_ELEMENT * t * h, gpu,
        FORWARD_KERNELS_PER_CHUNK * n + 1)
    weight_grad_bytes = (WEIGHT_GRAD_BYTES_PER_ELEMENT_PER_CHUNK * n + WEIGHT_GRAD_BYTES_PER_ELEMENT_ONCE) * v * h
    backward_s = (logits_s + sum(roofline.gemm_backward_time_s(g, gpu, p) for g in gemms)
                  + roofline.elementwise_time_s(
                      BACKWARD_BYTES_PER_LOGIT * t * v + INPUT_GRAD_COPY_BYTES_PER_ELEMENT * t * h
                      + (weight_grad_bytes if trainable else 0.0) + NORM_BACKWARD_BYTES_PER_ELEMENT * t * h,
                      gpu, BACKWARD_KERNELS_PER_CHUNK * n + 3))
    return forward_s, backward_s, forward_s
