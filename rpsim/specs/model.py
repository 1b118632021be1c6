"""Decoder-only transformer shape, as in a Hugging Face config.json (Llama / Qwen3 / GPT-OSS families)."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.errors import SpecError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    mlp_width: int  # per expert for MoE
    vocab: int
    tied_embeddings: bool = False
    n_experts: int = 1  # total experts; 1 = dense
    n_active_experts: int = 1
    qk_norm: bool = False  # Qwen3's per-head RMSNorm on q and k
    source: str = ""

    def __post_init__(self) -> None:
        for field in ("n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "mlp_width", "vocab",
                      "n_experts", "n_active_experts"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"model {self.name!r}: {field} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise SpecError(f"model {self.name!r}: n_heads {self.n_heads} is not a multiple of "
                            f"n_kv_heads {self.n_kv_heads}")
        if self.n_active_experts > self.n_experts:
            raise SpecError(f"model {self.name!r}: n_active_experts {self.n_active_experts} > "
                            f"n_experts {self.n_experts}")

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def q_width(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def n_pipeline_layers(self) -> int:
        """Embedding, each transformer layer, then head (final norm + LM head + loss)."""
        return self.n_layers + 2
