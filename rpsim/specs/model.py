"""Decoder-only transformer shape, as in a Hugging Face config.json (Llama, Mistral/Mixtral, Qwen2/2.5/3,
Gemma-2, Phi-3, GPT-OSS and DeepSeek-V2 families; rpsim.catalog.hf_config reads the files)."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.errors import SpecError

_POSITIVE = ("n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "mlp_width", "vocab", "n_experts",
             "n_active_experts")
_NON_NEGATIVE = ("n_shared_experts", "dense_mlp_width", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim",
                 "v_head_dim")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int  # per-head width of q and k (MLA: qk_nope_head_dim + qk_rope_head_dim)
    mlp_width: int  # per expert for MoE
    vocab: int
    tied_embeddings: bool = False
    n_experts: int = 1  # routed experts; 1 = dense
    n_active_experts: int = 1  # routed experts per token (top-k)
    qk_norm: bool = False  # Qwen3's per-head RMSNorm on q and k
    source: str = ""
    qkv_bias: bool = False  # Qwen2/2.5: biases on the q, k and v projections
    norms_per_layer: int = 2  # Gemma-2: 4 (a norm before and after both attention and MLP)
    n_shared_experts: int = 0  # DeepSeek-MoE: experts of mlp_width every token passes through
    dense_layers: tuple[int, ...] = ()  # MoE models: layers with one dense MLP of dense_mlp_width instead
    dense_mlp_width: int = 0
    renormalize_topk: bool = True  # the top-k routing weights sum to 1 (DeepSeek-V2: norm_topk_prob false)
    # Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434, Sec. 2.1); kv_lora_rank 0 = not MLA.
    kv_lora_rank: int = 0
    q_lora_rank: int = 0  # 0: a full-rank query projection (DeepSeek-V2-Lite)
    qk_rope_head_dim: int = 0  # the part of head_dim that carries RoPE (decoupled key shared by all heads)
    v_head_dim: int = 0  # 0: equal to head_dim

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense_layers", tuple(sorted(set(self.dense_layers))))
        for field in _POSITIVE + _NON_NEGATIVE:
            value = getattr(self, field)
            low = 1 if field in _POSITIVE else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                kind = "a positive" if low else "a non-negative"
                raise SpecError(f"model {self.name!r}: {field} must be {kind} integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise SpecError(f"model {self.name!r}: n_heads {self.n_heads} is not a multiple of "
                            f"n_kv_heads {self.n_kv_heads}")
        if self.n_active_experts > self.n_experts:
            raise SpecError(f"model {self.name!r}: n_active_experts {self.n_active_experts} > "
                            f"n_experts {self.n_experts}")
        if self.norms_per_layer not in (2, 4):
            raise SpecError(f"model {self.name!r}: norms_per_layer must be 2 or 4, got {self.norms_per_layer!r}")
        self._check_moe_layout()
        self._check_mla()

    def _check_moe_layout(self) -> None:
        bad = [i for i in self.dense_layers if not isinstance(i, int) or not 0 <= i < self.n_layers]
        if bad:
            raise SpecError(f"model {self.name!r}: dense_layers {bad!r} outside 0..{self.n_layers - 1}")
        if self.dense_layers and not self.is_moe:
            raise SpecError(f"model {self.name!r}: dense_layers need a MoE model (n_experts > 1)")
        if self.dense_layers and not self.dense_mlp_width:
            raise SpecError(f"model {self.name!r}: dense_layers {list(self.dense_layers)} need dense_mlp_width")
        if self.n_shared_experts and not self.is_moe:
            raise SpecError(f"model {self.name!r}: n_shared_experts needs a MoE model (n_experts > 1)")

    def _check_mla(self) -> None:
        if not self.kv_lora_rank:
            if self.q_lora_rank or self.qk_rope_head_dim:
                raise SpecError(f"model {self.name!r}: q_lora_rank and qk_rope_head_dim need MLA (kv_lora_rank > 0)")
            return
        if self.n_kv_heads != self.n_heads:
            raise SpecError(f"model {self.name!r}: MLA has one key and value per head; n_kv_heads "
                            f"{self.n_kv_heads} must equal n_heads {self.n_heads}")
        if not self.qk_rope_head_dim or self.qk_rope_head_dim % 2 or self.qk_rope_head_dim >= self.head_dim:
            raise SpecError(f"model {self.name!r}: MLA needs an even qk_rope_head_dim in 2..head_dim-1, "
                            f"got {self.qk_rope_head_dim!r} with head_dim {self.head_dim}")

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    def is_moe_layer(self, index: int) -> bool:
        return self.is_moe and index not in self.dense_layers

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def q_width(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Width of the keys (and, without MLA, of the values) after projection."""
        return self.n_kv_heads * self.head_dim

    @property
    def value_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def v_width(self) -> int:
        return self.n_kv_heads * self.value_dim

    @property
    def attn_out_width(self) -> int:
        """Input width of the output projection: every head's value-weighted sum."""
        return self.n_heads * self.value_dim

    @property
    def qk_nope_head_dim(self) -> int:
        return self.head_dim - self.qk_rope_head_dim

    @property
    def n_pipeline_layers(self) -> int:
        """Embedding, each transformer layer, then head (final norm + LM head + loss)."""
        return self.n_layers + 2
