"""Attention forward: triton_kernels.attention vs torch scaled_dot_product_attention
with the same key-padding mask, TFLOP/s.

Script: `python bench/bench_attention.py [--out-dir DIR]` writes attention.json / .md.
pytest-benchmark: `pytest bench/bench_attention.py --benchmark-only` (skips without CUDA).
TFLOP/s counts the dense 4 * batch * heads * seq^2 * head_dim (halved when causal),
the same work figure for both, so padding skipped by the lengths form shows up as speed.
"""
import argparse

import pytest
import torch

from common import RESULTS_DIR, device_description, median_ms, require_cuda_or_exit, write_results

# (name, batch, heads, seq, head_dim, mask): mask "none", "lengths" (uniform in 64..seq), "causal"
CASES = [
    ("en-2048 full", 32, 16, 512, 128, "none"),
    ("en-2048 padded", 32, 16, 512, 128, "lengths"),
    ("100-1280 padded", 32, 16, 512, 80, "lengths"),
    ("en-2048 causal", 32, 16, 512, 128, "causal"),
    ("short", 64, 16, 128, 128, "lengths"),
]


def make_inputs(batch, heads, seq, head_dim, mask, dtype, seed=0):
    """q, k, v views of one fused (batch, seq, 3 * dim) tensor, lengths, and the SDPA mask."""
    from triton_kernels.attention import split_fused_qkv

    generator = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(batch, seq, 3 * heads * head_dim, device="cuda", dtype=dtype, generator=generator)
    q, k, v = split_fused_qkv(qkv, heads)
    lengths = None
    if mask == "lengths":
        lengths = torch.randint(min(64, seq), seq + 1, (batch,), device="cuda", generator=generator)
    return q, k, v, lengths


def ours_fn(q, k, v, lengths, mask):
    from triton_kernels.attention import flash_attention

    return lambda: flash_attention(q, k, v, lengths=lengths, causal=mask == "causal")


def sdpa_fn(q, k, v, lengths, mask):
    """SDPA on (batch, heads, seq, head_dim) views of the same tensors, same mask."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    attn_mask = None
    if lengths is not None:
        seq = q.shape[1]
        attn_mask = (torch.arange(seq, device=q.device)[None, :] < lengths[:, None])[:, None, None, :]
    causal = mask == "causal"
    return lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=attn_mask, is_causal=causal)


def dense_flops(batch, heads, seq, head_dim, mask):
    flops = 4.0 * batch * heads * seq * seq * head_dim
    return flops / 2 if mask == "causal" else flops


def run_case(name, batch, heads, seq, head_dim, mask, dtype):
    q, k, v, lengths = make_inputs(batch, heads, seq, head_dim, mask, dtype)
    ours, sdpa = ours_fn(q, k, v, lengths, mask), sdpa_fn(q, k, v, lengths, mask)
    max_abs_diff = (ours().view_as(q).float() - sdpa().transpose(1, 2).float()).abs().max().item()
    ours_ms, sdpa_ms = median_ms(ours), median_ms(sdpa)
    flops = dense_flops(batch, heads, seq, head_dim, mask)
    return dict(
        device_description(), case=name, dtype=str(dtype).replace("torch.", ""), batch=batch, heads=heads, seq=seq,
        head_dim=head_dim, mask=mask, ours_ms=ours_ms, sdpa_ms=sdpa_ms,
        ours_tflops=flops / ours_ms / 1e9, sdpa_tflops=flops / sdpa_ms / 1e9, speedup_vs_sdpa=sdpa_ms / ours_ms,
        max_abs_diff_vs_sdpa=max_abs_diff,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=RESULTS_DIR)
    args = parser.parse_args()
    require_cuda_or_exit("bench_attention.py")
    rows = [run_case(*case, dtype) for dtype in (torch.bfloat16, torch.float16) for case in CASES]
    write_results(args.out_dir, "attention", rows,
                  ["case", "dtype", "mask", "ours_ms", "sdpa_ms", "ours_tflops", "sdpa_tflops", "speedup_vs_sdpa",
                   "max_abs_diff_vs_sdpa"],
                  "Attention forward: triton_kernels.attention vs torch SDPA")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmark needs CUDA")


@needs_cuda
@pytest.mark.parametrize("implementation", ["triton", "sdpa"])
@pytest.mark.parametrize("case", CASES[:3], ids=[case[0] for case in CASES[:3]])
def test_attention(benchmark, case, implementation):
    name, batch, heads, seq, head_dim, mask = case
    inputs = make_inputs(batch, heads, seq, head_dim, mask, torch.bfloat16)
    fn = (ours_fn if implementation == "triton" else sdpa_fn)(*inputs, mask)

    def synchronized():
        fn()
        torch.cuda.synchronize()

    benchmark(synchronized)


if __name__ == "__main__":
    main()
