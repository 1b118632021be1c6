"""The activation bytes rpsim counts for rpexec's layers (rpsim/costs/activations.py) against the tensors
torch really saves for backward when rpexec/model.py runs them (autograd's saved_tensors_hooks), and closed
forms of the memory timeline on small plans."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rpexec import model as rpmodel
from rpsim.costs.activations import layer_activation_bytes
from rpsim.specs import ModelSpec, TrainingSpec


class _FusedRmsNorm(torch.autograd.Function):
    """Saves what CUDA's fused rms_norm saves for backward (torch derivatives.yaml, _fused_rms_norm: its
    input, rstd and the weight). On CPU F.rms_norm is a composite of elementwise ops that also saves the
    normalised fp32 tensor; the e03 runs on H200 (tests/test_e03_memory.py) match the fused count."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, rstd, weight)
        return x * rstd * weight

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError  # the test only counts what forward saves


def _fused_rms_norm(x, shape, weight, eps):
    return _FusedRmsNorm.apply(x, weight, eps)


def saved_activation_bytes(module, x: torch.Tensor) -> dict[int, tuple]:
    """Distinct storages autograd saves during module(x), leaving out the parameters (and their fp32
    casts) and RoPE's cos / sin tables, which every call shares: storage -> (bytes, shape, dtype)."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, tuple] = {}

    def pack(t):
        st = t.untyped_storage()
        per_call = t.dim() >= 2 and t.shape[0] in (x.shape[0], x.shape[0] * x.shape[1])
        if st.data_ptr() not in params and per_call:
            seen[st.data_ptr()] = (st.nbytes(), tuple(t.shape), t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return seen


@pytest.mark.parametrize("qk_norm", [False, True])
def test_rpexec_layer_saves_what_rpsim_counts(monkeypatch, qk_norm):
    monkeypatch.setattr(rpmodel.F, "rms_norm", _fused_rms_norm)
    m = ModelSpec(name="t", n_layers=1, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64, mlp_width=384,
                  vocab=1000, qk_norm=qk_norm)
    b, s = 2, 64
    layer = rpmodel.DecoderLayer(m, 0).to(torch.bfloat16)
    x = torch.randn(b, s, m.hidden, dtype=torch.bfloat16, requires_grad=True)
    saved = saved_activation_bytes(layer, x)
    measured = sum(n for n, _shape, _dtype in saved.values())
    counted = layer_activation_bytes(m, TrainingSpec(seq_len=s, global_batch=b, mb_size=b, layer_impl="rpexec"), 0)
    assert measured == pytest.approx(counted, rel=0.01), sorted(saved.values())


def test_layer_impl_flag_reaches_the_costs(run_cli):
    """`--layer-impl` picks the count (per 2048-token microbatch of Llama-3-8B: rpexec keeps 12h + 10q + 8m
    bytes per token, Hugging Face with FlashAttention-2 16h + 4q + 4kv + 8m), and a bad value exits 2."""
    import json
    per_layer = {}
    for impl in ("rpexec", "hf-fa2"):
        code, out, _ = run_cli("costs", "--model", "llama3-8b", "--gpus", "4090x8", "--mb-size", "1",
                               "--global-batch", "1", "--layer-impl", impl, "--format", "json")
        assert code == 0
        per_layer[impl] = json.loads(out)["layers"][1]["activation_bytes"] / 2048
    h, q, kv, m = 4096, 4096, 1024, 14336
    assert per_layer["rpexec"] == 12 * h + 10 * q + 8 * m + 4 * 32
    assert per_layer["hf-fa2"] == 16 * h + 4 * q + 4 * kv + 8 * m + 4 * 32
    code, _, err = run_cli("costs", "--model", "llama3-8b", "--gpus", "4090x8", "--layer-impl", "torch")
    assert code == 2 and "invalid choice" in err and "hf-fa2" in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("qk_norm", [False, True])
def test_rpexec_layer_on_cuda_keeps_what_rpsim_counts(qk_norm):
    """On a GPU, with CUDA's own rms_norm and SDPA: the bytes a layer's forward leaves allocated (its
    saved tensors) and the extra its backward reaches, against the counts (Llama-3-8B widths, 1 x 2048
    tokens, bf16)."""
    from rpsim.costs.activations import layer_backward_extra_bytes
    m = ModelSpec(name="t", n_layers=1, hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128, mlp_width=14336,
                  vocab=1000, qk_norm=qk_norm)
    train = TrainingSpec(seq_len=2048, global_batch=1, mb_size=1, layer_impl="rpexec")
    dev = torch.device("cuda")
    layer = rpmodel.DecoderLayer(m, 0).to(dev, torch.bfloat16)
    x = torch.randn(1, 2048, m.hidden, dtype=torch.bfloat16, device=dev, requires_grad=True)
    layer(x)  # warm-up: RoPE tables, cuBLAS workspaces
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(dev)
    out = layer(x)
    torch.cuda.synchronize()
    saved = torch.cuda.memory_allocated(dev) - before - out.numel() * out.element_size()
    assert saved == pytest.approx(layer_activation_bytes(m, train, 0), rel=0.03)
    torch.cuda.reset_peak_memory_stats(dev)
    start = torch.cuda.memory_allocated(dev)
    out.backward(torch.ones_like(out))
    extra = torch.cuda.max_memory_allocated(dev) - start
    # the backward's peak over what was allocated when it began; parameter gradients (allocated on the
    # way) are not activations
    grads = sum(p.numel() * p.element_size() for p in layer.parameters())
    assert extra - grads <= layer_backward_extra_bytes(m, train, 0) * 1.5
