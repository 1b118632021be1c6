"""Shared helpers for rpexec tests: tiny Hugging Face configs and plan export through rpsim's CLI."""
from __future__ import annotations

import json
from pathlib import Path

from rpsim.cli.main import main as rpsim_main

TINY = {"num_hidden_layers": 8, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "vocab_size": 64, "tie_word_embeddings": False, "model_type": "llama"}
TINY_MOE = {**TINY, "num_hidden_layers": 4, "num_experts": 4, "num_experts_per_tok": 2,
            "moe_intermediate_size": 32, "model_type": "qwen3_moe"}


def write_config(tmp: Path, config: dict, name: str = "tiny.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps(config))
    return path


def export(tmp: Path, config: Path, schedule: str, gpus: str = "4090x2", *extra: str) -> Path:
    out = tmp / f"{schedule}-{gpus}-{abs(hash(extra))}.json"
    code = rpsim_main(["export", "--model", str(config), "--gpus", gpus, "--seq", "16", "--global-batch", "8",
                       "--n-mb", "4", "--schedule", schedule, "-o", str(out), *extra])
    assert code == 0, f"export {schedule} failed"
    return out
# DeepSeek-V2-Lite's shape shrunk: MLA with a full-rank query, 2 shared + 4 routed experts (top-2, weights
# not renormalised), layer 0 dense (first_k_dense_replace = 1).
TINY_DEEPSEEK = {"model_type": "deepseek_v2", "num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 4,
                 "num_key_value_heads": 4, "vocab_size": 64, "tie_word_embeddings": False, "intermediate_size": 48,
                 "moe_intermediate_size": 16, "n_routed_experts": 4, "n_shared_experts": 2, "num_experts_per_tok": 2,
                 "first_k_dense_replace": 1, "moe_layer_freq": 1, "norm_topk_prob": False, "kv_lora_rank": 16,
                 "q_lora_rank": None, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6}
