"""Training setup: batch shape, precision, full fine-tuning or LoRA, recompute, optimizer placement."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.errors import SpecError
from rpsim.specs.gpu import PRECISIONS

MODES = ("full", "lora")
RECOMPUTE_POLICIES = ("none", "stage", "layer")
OPTIMIZER_PLACEMENTS = ("cpu", "gpu")
LORA_TARGETS_ALL = ("q", "k", "v", "o", "gate", "up", "down")
# Which code runs the layers, which sets the activation bytes they keep (rpsim/costs/activations.py):
# rpexec's decoder, Hugging Face layers with FlashAttention-2 (the RoundPipe paper's runs), or the
# paper's idealised formula.
LAYER_IMPLS = ("rpexec", "hf-fa2", "paper")


@dataclass(frozen=True)
class TrainingSpec:
    seq_len: int = 2048
    global_batch: int = 64  # sequences per optimizer step
    mb_size: int = 4  # sequences per microbatch
    precision: str = "bf16"
    mode: str = "full"
    lora_rank: int = 32
    lora_targets: tuple[str, ...] = LORA_TARGETS_ALL
    recompute: str = "stage"
    optimizer_placement: str = "cpu"
    optimizer_async: bool = True
    loss_chunk_tokens: int = 0  # > 0: the loss is computed this many tokens at a time (no full logits)
    layer_impl: str = "rpexec"

    def __post_init__(self) -> None:
        for field in ("seq_len", "global_batch", "mb_size", "lora_rank"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"{field} must be a positive integer, got {value!r}")
        if not isinstance(self.loss_chunk_tokens, int) or self.loss_chunk_tokens < 0:
            raise SpecError(f"loss_chunk_tokens must be 0 (full logits) or a positive integer, "
                            f"got {self.loss_chunk_tokens!r}")
        if self.global_batch % self.mb_size:
            raise SpecError(f"global_batch {self.global_batch} is not a multiple of mb_size {self.mb_size}; "
                            f"valid mb sizes: {', '.join(str(d) for d in divisors(self.global_batch))}")
        choices = {"precision": PRECISIONS, "mode": MODES, "recompute": RECOMPUTE_POLICIES,
                   "optimizer_placement": OPTIMIZER_PLACEMENTS, "layer_impl": LAYER_IMPLS}
        for field, valid in choices.items():
            if getattr(self, field) not in valid:
                raise SpecError(f"{field} {getattr(self, field)!r} unknown; valid choices: {', '.join(valid)}")
        bad = [t for t in self.lora_targets if t not in LORA_TARGETS_ALL]
        if bad:
            raise SpecError(f"lora_targets {bad!r} unknown; valid choices: {', '.join(LORA_TARGETS_ALL)}")

    @property
    def n_mb(self) -> int:
        return self.global_batch // self.mb_size

    @property
    def mb_tokens(self) -> int:
        return self.mb_size * self.seq_len

    @property
    def tokens_per_iteration(self) -> int:
        return self.global_batch * self.seq_len


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
