"""The matrix multiplies of one pipeline layer's forward pass, and its parameter counts.

A GEMM (m, n, k) multiplies an m x k by a k x n matrix: 2·m·n·k FLOPs. Tokens T = mb_size · seq_len.
Shapes follow the Llama / Qwen decoder (GQA attention, SwiGLU MLP or top-k MoE) with the real projection
widths (q_width = heads · head_dim may differ from hidden; models.md notes), and DeepSeek-V2's
multi-head latent attention and shared-expert MoE (arXiv 2405.04434, Sec. 2.1 and 2.2).
"""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.specs.model import ModelSpec
from rpsim.specs.training import TrainingSpec


@dataclass(frozen=True)
class Gemm:
    name: str
    m: int  # rows of the activation (tokens)
    n: int  # output width
    k: int  # input width
    count: int = 1  # identical GEMMs (MoE experts)
    trainable: bool = True  # False for frozen base weights under LoRA

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.count


@dataclass(frozen=True)
class Linear:
    """One weight matrix of a layer (in -> out), or `copies` identical ones for routed experts."""
    name: str
    lora_target: str  # the LoRA target group (TrainingSpec.lora_targets) it belongs to; "" = never adapted
    inp: int
    out: int
    copies: int = 1
    routed: bool = False  # a routed expert: each copy sees T·k/E tokens on average


def attention_linears(model: ModelSpec) -> list[Linear]:
    h = model.hidden
    if not model.is_mla:
        return [Linear("q", "q", h, model.q_width), Linear("k", "k", h, model.kv_width),
                Linear("v", "v", h, model.v_width), Linear("o", "o", model.attn_out_width, h)]
    # MLA (DeepSeek-V2 Eq. 9-19): queries from h (or through a q_lora_rank latent, Eq. 12-13); one
    # projection to the kv latent c_KV plus the decoupled RoPE key k^R shared by all heads (Eq. 9, 17),
    # one up-projection of c_KV to every head's non-RoPE key and value (Eq. 10-11). LoRA groups: q,
    # k = the down-projection, v = the up-projection, o.
    if model.q_lora_rank:
        q = [Linear("q_a", "q", h, model.q_lora_rank), Linear("q_b", "q", model.q_lora_rank, model.q_width)]
    else:
        q = [Linear("q", "q", h, model.q_width)]
    kv_up = model.n_heads * (model.qk_nope_head_dim + model.value_dim)
    return q + [Linear("kv_a", "k", h, model.kv_lora_rank + model.qk_rope_head_dim),
                Linear("kv_b", "v", model.kv_lora_rank, kv_up), Linear("o", "o", model.attn_out_width, h)]


def _swiglu(prefix: str, h: int, width: int, copies: int = 1, routed: bool = False) -> list[Linear]:
    return [Linear(f"{prefix}{name}", name, i, o, copies, routed)
            for name, (i, o) in (("gate", (h, width)), ("up", (h, width)), ("down", (width, h)))]


def mlp_linears(model: ModelSpec, index: int) -> list[Linear]:
    """A dense SwiGLU MLP, or a router plus routed experts plus (DeepSeekMoE, Sec. 2.2) shared experts,
    which DeepSeek-V2 implements as one MLP n_shared_experts · mlp_width wide."""
    h = model.hidden
    if not model.is_moe:
        return _swiglu("", h, model.mlp_width)
    if not model.is_moe_layer(index):
        return _swiglu("", h, model.dense_mlp_width)
    out = [Linear("router", "", h, model.n_experts), *_swiglu("expert.", h, model.mlp_width, model.n_experts, True)]
    if model.n_shared_experts:
        out += _swiglu("shared.", h, model.n_shared_experts * model.mlp_width)
    return out


def layer_linears(model: ModelSpec, index: int) -> list[Linear]:
    return attention_linears(model) + mlp_linears(model, index)


def _rows(model: ModelSpec, train: TrainingSpec, lin: Linear) -> int:
    # Each token visits n_active experts: on average T·E_act/E tokens per expert (balanced routing).
    if lin.routed:
        return max(1, round(train.mb_tokens * model.n_active_experts / model.n_experts))
    return train.mb_tokens


def layer_gemms(model: ModelSpec, train: TrainingSpec, index: int) -> list[Gemm]:
    """Forward GEMMs of transformer layer `index` (attention score/value products excluded)."""
    frozen = train.mode == "lora"
    gemms = [Gemm(lin.name, _rows(model, train, lin), lin.out, lin.inp, count=lin.copies, trainable=not frozen)
             for lin in layer_linears(model, index)]
    if frozen:
        gemms += lora_gemms(model, train, index)
    return gemms


def lora_gemms(model: ModelSpec, train: TrainingSpec, index: int) -> list[Gemm]:
    """LoRA adapters A (in -> r) and B (r -> out) on each target linear (Hu et al. 2021, Sec. 4).

    For MoE layers the MLP adapters sit on every expert (as PEFT does for all-linear targets), and a
    token passes only through its active experts' adapters.
    """
    r = train.lora_rank
    out = []
    for lin in layer_linears(model, index):
        if lin.lora_target in train.lora_targets:
            rows = _rows(model, train, lin)
            out += [Gemm(f"lora_a.{lin.name}", rows, r, lin.inp, count=lin.copies),
                    Gemm(f"lora_b.{lin.name}", rows, lin.out, r, count=lin.copies)]
    return out


def attention_flops(model: ModelSpec, train: TrainingSpec) -> float:
    """QKᵀ (head_dim wide) and attention·V (value_dim wide) under the causal mask:
    b·s²·heads·(head_dim + value_dim) forward, half of PaLM's full-matrix count (App. B: 4·b·s²·q_width when
    value_dim = head_dim), because a causal kernel skips the masked half (FlashAttention-2, Dao 2023,
    Sec. 4.1) and the time model charges only that half: counting the full matrix in MFU while timing half
    of it gave MFU over 100% at long sequences, where attention dominates."""
    return 1.0 * train.mb_size * train.seq_len**2 * model.n_heads * (model.head_dim + model.value_dim)


def layer_norm_params(model: ModelSpec) -> int:
    """RMSNorm gains: norms_per_layer over h, Qwen3's q/k norms over head_dim, MLA's norms on its
    latents (DeepSeek-V2 normalises c_KV and c_Q before the up-projections)."""
    qk = 2 * model.head_dim if model.qk_norm else 0
    return model.norms_per_layer * model.hidden + qk + model.kv_lora_rank + model.q_lora_rank


def layer_params(model: ModelSpec, index: int, active_only: bool = False) -> int:
    """Parameters of transformer layer `index`: projections (and Qwen2's q/k/v biases), norms, MLP or
    router + experts; active_only counts n_active_experts of the routed ones."""
    weights = 0
    for lin in layer_linears(model, index):
        copies = model.n_active_experts if lin.routed and active_only else lin.copies
        weights += copies * lin.inp * lin.out
    biases = model.q_width + model.kv_width + model.v_width if model.qkv_bias else 0
    return weights + biases + layer_norm_params(model)


def layer_tensor_params(model: ModelSpec, index: int) -> tuple[int, ...]:
    """The sizes of transformer layer `index`'s parameter tensors, one per weight matrix (each routed
    expert its own), then the q/k/v biases, then all norm gains as one (each is far below any cache):
    the host optimizer's unit of work (rpsim.costs.cpu_optimizer). They sum to layer_params."""
    weights = [lin.inp * lin.out for lin in layer_linears(model, index) for _ in range(lin.copies)]
    biases = [model.q_width, model.kv_width, model.v_width] if model.qkv_bias else []
    return tuple(weights + biases + [layer_norm_params(model)])


def lora_tensor_params(model: ModelSpec, train: TrainingSpec, index: int) -> tuple[int, ...]:
    """Each adapted matrix's LoRA pair (A and B, rank x (in + out)) as one tensor: they sum to lora_params."""
    return tuple(train.lora_rank * (lin.inp + lin.out) for lin in layer_linears(model, index)
                 if lin.lora_target in train.lora_targets for _ in range(lin.copies))


def lora_params(model: ModelSpec, train: TrainingSpec, index: int) -> int:
    return sum(lin.copies * train.lora_rank * (lin.inp + lin.out)
               for lin in layer_linears(model, index) if lin.lora_target in train.lora_targets)
