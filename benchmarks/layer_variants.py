"""Times one decoder layer of rpexec's model on a GPU under kernel variants, to choose what rpexec runs:
forward without grad (a forward job under recompute), and forward with autograd plus backward (what a
recompute backward job runs per layer). Prints ms per call; asserts nothing.

    python3 benchmarks/layer_variants.py --shape 2.8b|8b [--mb 8] [--compile]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

from rpexec import model as rmodel
from rpsim.specs import ModelSpec

SHAPES = {"2.8b": (3072, 24, 8, 8192), "8b": (4096, 32, 8, 14336)}


def spec(shape: str) -> ModelSpec:
    h, heads, kv, mlp = SHAPES[shape]
    return ModelSpec(name=shape, n_layers=2, hidden=h, n_heads=heads, n_kv_heads=kv, head_dim=128, mlp_width=mlp,
                     vocab=32000)


def time_ms(fn, reps: int = 10) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def run(shape: str, mb: int, dtype: torch.dtype, compile_layer: bool) -> dict[str, float]:
    m = spec(shape)
    layer = rmodel.DecoderLayer(m, 0).to("cuda", dtype)
    w = {n: p.detach().clone().requires_grad_(True) for n, p in layer.named_parameters()}
    with torch.device("meta"):
        skel = rmodel.DecoderLayer(m, 0)
    x = torch.randn(mb, 2048, m.hidden, device="cuda", dtype=dtype)
    g = torch.randn_like(x)

    def layer_fn(weights, inp):  # type: ignore[no-untyped-def]
        return functional_call(skel, weights, (inp,))

    fn = torch.compile(layer_fn) if compile_layer else layer_fn

    def no_grad_fwd() -> None:
        with torch.no_grad():
            fn(w, x)

    def fwd_bwd() -> None:
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = fn(w, leaf)
        out.backward(g)

    t0 = time.perf_counter()
    no_grad_fwd()
    fwd_bwd()
    torch.cuda.synchronize()
    first_s = time.perf_counter() - t0
    return {"fwd_ms": time_ms(no_grad_fwd), "fwd_bwd_ms": time_ms(fwd_bwd), "first_call_s": first_s}


def patch(variant: str) -> None:
    """Swap the layer's code for a variant (module functions looked up at call time)."""
    if "gqa" in variant:
        def attn_forward(self, x):  # type: ignore[no-untyped-def]
            b, s, _ = x.shape
            mm = self.m
            q = self.q_proj(x).view(b, s, mm.n_heads, mm.head_dim)
            k = self.k_proj(x).view(b, s, mm.n_kv_heads, mm.head_dim)
            v = self.v_proj(x).view(b, s, mm.n_kv_heads, mm.head_dim)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            q, k = rmodel.rope(q), rmodel.rope(k)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return self.o_proj(y.transpose(1, 2).reshape(b, s, mm.q_width))
        rmodel.Attention.forward = attn_forward
    if "norm16" in variant:
        rmodel.RMSNorm.forward = lambda self, x: F.rms_norm(x, (x.shape[-1],), self.weight, rmodel.NORM_EPS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="2.8b", choices=SHAPES)
    p.add_argument("--mb", type=int, default=8)
    p.add_argument("--variant", default="eager", help="eager | gqa | norm16 | gqa+norm16")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    patch(a.variant)
    r = run(a.shape, a.mb, torch.float16, a.compile)
    print(f"{a.shape} mb{a.mb} {a.variant}{' compiled' if a.compile else ''}: fwd {r['fwd_ms']:.2f} ms, "
          f"fwd+bwd {r['fwd_bwd_ms']:.2f} ms, first calls {r['first_call_s']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
