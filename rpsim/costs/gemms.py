"""The matrix multiplies of one pipeline layer's forward pass, and its parameter counts.

A GEMM (m, n, k) multiplies an m x k by a k x n matrix: 2·m·n·k FLOPs. Tokens T = mb_size · seq_len.
Shapes follow the Llama / Qwen3 decoder (GQA attention, SwiGLU MLP or top-k MoE), with the real
projection widths (q_width = heads · head_dim may differ from hidden; models.md notes).
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


def linear_shapes(model: ModelSpec) -> dict[str, tuple[int, int]]:
    """(in, out) widths of each linear in one transformer layer, keyed by LoRA target name."""
    h, qw, kw, m = model.hidden, model.q_width, model.kv_width, model.mlp_width
    return {"q": (h, qw), "k": (h, kw), "v": (h, kw), "o": (qw, h), "gate": (h, m), "up": (h, m), "down": (m, h)}


def layer_gemms(model: ModelSpec, train: TrainingSpec) -> list[Gemm]:
    """Forward GEMMs of one transformer layer (attention score/value products excluded)."""
    t = train.mb_tokens
    frozen = train.mode == "lora"
    gemms = [Gemm(name, t, out, inp, trainable=not frozen)
             for name, (inp, out) in linear_shapes(model).items() if name in ("q", "k", "v", "o")]
    mlp = {k: v for k, v in linear_shapes(model).items() if k in ("gate", "up", "down")}
    if model.is_moe:
        # Each token visits n_active experts: on average T·E_act/E tokens per expert (balanced routing).
        tokens_per_expert = max(1, round(t * model.n_active_experts / model.n_experts))
        gemms.append(Gemm("router", t, model.n_experts, model.hidden, trainable=not frozen))
        gemms += [Gemm(name, tokens_per_expert, out, inp, count=model.n_experts, trainable=not frozen)
                  for name, (inp, out) in mlp.items()]
    else:
        gemms += [Gemm(name, t, out, inp, trainable=not frozen) for name, (inp, out) in mlp.items()]
    if frozen:
        gemms += lora_gemms(model, train)
    return gemms


def lora_gemms(model: ModelSpec, train: TrainingSpec) -> list[Gemm]:
    """LoRA adapters A (in -> r) and B (r -> out) on each target linear (Hu et al. 2021, Sec. 4).

    For MoE layers the MLP adapters sit on every expert (as PEFT does for all-linear targets), and a
    token passes only through its active experts' adapters.
    """
    t, r = train.mb_tokens, train.lora_rank
    out = []
    for name, (inp, width) in linear_shapes(model).items():
        if name not in train.lora_targets:
            continue
        is_expert = model.is_moe and name in ("gate", "up", "down")
        rows = max(1, round(t * model.n_active_experts / model.n_experts)) if is_expert else t
        count = model.n_experts if is_expert else 1
        out += [Gemm(f"lora_a.{name}", rows, r, inp, count=count), Gemm(f"lora_b.{name}", rows, width, r, count=count)]
    return out


def attention_flops(model: ModelSpec, train: TrainingSpec) -> float:
    """QKᵀ and attention·V: 4·b·s²·q_width forward, counted without the causal mask (PaLM, App. B)."""
    return 4.0 * train.mb_size * train.seq_len**2 * model.q_width


def layer_params(model: ModelSpec, active_only: bool = False) -> int:
    """Parameters of one transformer layer: projections, norms, MLP or experts + router."""
    h = model.hidden
    attn = sum(i * o for name, (i, o) in linear_shapes(model).items() if name in ("q", "k", "v", "o"))
    norms = 2 * h + (2 * model.head_dim if model.qk_norm else 0)
    mlp_one = 3 * h * model.mlp_width
    if model.is_moe:
        experts = model.n_active_experts if active_only else model.n_experts
        mlp = experts * mlp_one + h * model.n_experts
    else:
        mlp = mlp_one
    return attn + norms + mlp


def lora_params(model: ModelSpec, train: TrainingSpec) -> int:
    total = 0
    for name, (inp, width) in linear_shapes(model).items():
        if name in train.lora_targets:
            copies = model.n_experts if model.is_moe and name in ("gate", "up", "down") else 1
            total += copies * train.lora_rank * (inp + width)
    return total
