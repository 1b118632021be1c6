"""The time of the `roundpipe` library's chunked linear cross-entropy, kernel by kernel.

What runs (roundpipe 0.1.1, models/function.py, ChunkedCompileLinearCrossEntropy, called by the last
stage's postfix module when the artifact's roundpipe/train.py passes `return_logits=False`): its autograd
forward splits the tokens into TOKEN_CHUNK_SIZE (4096) chunks and, when grad is enabled, runs for each
chunk the torch.compile'd logits GEMM and cross-entropy *and that chunk's backward at once*
(`loss.backward()` inside the forward); it saves only the input and weight gradients. Its autograd
backward scales those saved gradients by the incoming one (`mul_`) and passes them on. Without grad (a
forward whose stage is recomputed later) it runs each chunk's GEMM and loss forward only.

Kernels per chunk of c tokens (v vocabulary, h hidden, fp16; what the compiled graphs read and write,
checked on torch 2.13's CPU inductor: the forward saves the fp16 logits and one max and one log-sum per row,
the backward reads the logits once and writes their fp16 gradient in place):
- the logits GEMM (c, v, h), writing 2 B per logit (priced by the roofline with the GEMM);
- the cross-entropy forward, one fused reduction reading the fp16 logits: 2 B per logit (one pass with
  inductor's online softmax, torch 2.13's default; the authors' torch 2.7 may take max and sum in two
  passes over each row, the second not counted);
- with grad: the cross-entropy backward, one fused kernel reading the logits and writing their gradient:
  4 B per logit; the input-gradient GEMM (c, h, v) and the weight-gradient GEMM (h, v, c);
- autograd around them: `hidden_states.split` hands each chunk's input gradient back as a full-size
  tensor (torch's split backward fills the other chunks with zeros and concatenates: 2(t - c)h written,
  2th read and 2th written) which, like the weight gradient (2vh), is added into the accumulated one
  from the second chunk on (read 2 + 2, write 2 B per element).
The autograd backward's `mul_` reads and writes both gradients once (4 B per element).
"""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.costs import roofline
from rpsim.costs.gemms import Gemm
from rpsim.specs.gpu import GPUSpec
from rpsim.specs.model import ModelSpec
from rpsim.specs.training import TrainingSpec

FP16 = 2.0
CE_FORWARD_BYTES_PER_LOGIT = 2.0  # one read of the fp16 logits
CE_BACKWARD_BYTES_PER_LOGIT = 4.0  # read the logits, write their fp16 gradient
ACCUMULATE_BYTES_PER_ELEMENT = 6.0  # in-place add of two fp16 tensors: read 2 + 2, write 2
SCALE_BYTES_PER_ELEMENT = 4.0  # in-place mul_ by a scalar tensor: read 2, write 2


@dataclass(frozen=True)
class ChunkedLossTimes:
    """Seconds of the loss (without the final norm) in each place the library runs it."""
    forward_s: float  # logits GEMMs and cross-entropy forwards: what a forward without grad runs
    gradient_s: float  # what a forward with grad adds: the chunks' backwards and their accumulation
    backward_s: float  # the autograd backward: scaling the saved gradients

    @property
    def with_grad_s(self) -> float:
        return self.forward_s + self.gradient_s


def chunk_sizes(tokens: int, chunk_tokens: int) -> list[int]:
    """torch.split's chunks: full ones, then the remainder."""
    full, rest = divmod(tokens, chunk_tokens)
    return [chunk_tokens] * full + ([rest] if rest else [])


def chunked_loss_times(model: ModelSpec, train: TrainingSpec, gpu: GPUSpec) -> ChunkedLossTimes:
    t, h, v = train.mb_tokens, model.hidden, model.vocab
    trainable = train.mode != "lora"  # the RoundPipe paper's LoRA run freezes the LM head
    p = train.precision
    chunks = chunk_sizes(t, train.loss_chunk_tokens)
    n = len(chunks)
    gemms = [Gemm("lm_head", c, v, h, trainable=trainable) for c in chunks]
    forward_s = (sum(roofline.gemm_time_s(g, gpu, p) for g in gemms)
                 + roofline.elementwise_time_s(CE_FORWARD_BYTES_PER_LOGIT * t * v, gpu, n))
    # Kernels with grad, per chunk: the loss backward, the split's zero fills of the other chunks and its
    # concatenation; from the second chunk on, the additions into the accumulated gradients.
    split_bytes = sum(FP16 * (t - c) * h + 2 * FP16 * t * h for c in chunks)
    accumulated = (n - 1) * ACCUMULATE_BYTES_PER_ELEMENT * (t * h + (v * h if trainable else 0))
    gradient_s = (sum(roofline.gemm_backward_time_s(g, gpu, p) for g in gemms)
                  + roofline.elementwise_time_s(CE_BACKWARD_BYTES_PER_LOGIT * t * v + split_bytes + accumulated,
                                                gpu, n * (n + 1) + (n - 1) * (2 if trainable else 1)))
    backward_s = roofline.elementwise_time_s(SCALE_BYTES_PER_ELEMENT * (t * h + (v * h if trainable else 0)),
                                             gpu, 2 if trainable else 1)
    return ChunkedLossTimes(forward_s=forward_s, gradient_s=gradient_s, backward_s=backward_s)
