"""Attention forward: triton_kernels.attention vs torch scaled_dot_product_attention
with the same key-padding mask, TFLOP/s.

Script: `python bench/bench_attention.py [--out-dir DIR] [--sweep]` writes
attention.json / .md; --sweep also times tile configurations (attention_sweep.json / .md).
pytest-benchmark: `pytest bench/bench_attention.py --benchmark-only` (skips without CUDA).
TFLOP/s counts the dense 4 * batch * heads * seq^2 * head_dim (halved when causal),
the same work figure for both, so padding skipped by the lengths form shows up as speed.
ours_model_ms: the lengths cases as XLMModel runs them (zero_padded_queries=True: query
tiles of padding only are not computed; SDPA and `ours` compute every query).
"""
import argparse

import pytest
import torch

from common import (
    RESULTS_DIR,
    benchmark_on_cuda,
    device_description,
    median_ms,
    require_cuda_or_exit,
    time_configuration,
    with_patch,
    write_results,
)

# (name, batch, heads, seq, head_dim, mask): mask "full" (a padding mask, every length =
# seq: SDPA gets an all-True mask), "lengths" (uniform in 64..seq), "causal", "none"
CASES = [
    ("en-2048 all valid", 32, 16, 512, 128, "full"),
    ("en-2048 padded", 32, 16, 512, 128, "lengths"),
    ("en-2048 no mask", 32, 16, 512, 128, "none"),
    ("100-1280 all valid", 32, 16, 512, 80, "full"),
    ("100-1280 padded", 32, 16, 512, 80, "lengths"),
    ("en-2048 causal", 32, 16, 512, 128, "causal"),
    ("short", 64, 16, 128, 128, "lengths"),
]
# tile configurations compared by --sweep: (BLOCK_M, BLOCK_N, num_warps, num_stages)
SWEEP = [(128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3), (64, 64, 4, 3),
         (128, 32, 8, 3), (64, 32, 4, 4), (128, 64, 4, 3)]


def make_inputs(batch, heads, seq, head_dim, mask, dtype, seed=0):
    """q, k, v views of one fused (batch, seq, 3 * dim) tensor, lengths, and the SDPA mask."""
    from xlm_fast.triton_kernels.attention import split_fused_qkv

    generator = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(batch, seq, 3 * heads * head_dim, device="cuda", dtype=dtype, generator=generator)
    q, k, v = split_fused_qkv(qkv, heads)
    lengths = None
    if mask == "lengths":
        lengths = torch.randint(min(64, seq), seq + 1, (batch,), device="cuda", generator=generator)
    elif mask == "full":
        lengths = torch.full((batch,), seq, device="cuda")
    return q, k, v, lengths


def ours_fn(q, k, v, lengths, mask, zero_padded_queries=False):
    from xlm_fast.triton_kernels.attention import flash_attention

    return lambda: flash_attention(q, k, v, lengths=lengths, causal=mask == "causal",
                                   zero_padded_queries=zero_padded_queries)


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
    row = dict(
        device_description(), case=name, dtype=str(dtype).replace("torch.", ""), batch=batch, heads=heads, seq=seq,
        head_dim=head_dim, mask=mask, ours_ms=ours_ms, sdpa_ms=sdpa_ms,
        ours_tflops=flops / ours_ms / 1e9, sdpa_tflops=flops / sdpa_ms / 1e9, speedup_vs_sdpa=sdpa_ms / ours_ms,
        max_abs_diff_vs_sdpa=max_abs_diff,
    )
    if mask == "lengths":  # as XLMModel calls it: padding-only query tiles skipped
        row["ours_model_ms"] = median_ms(ours_fn(q, k, v, lengths, mask, zero_padded_queries=True))
        row["model_speedup_vs_sdpa"] = sdpa_ms / row["ours_model_ms"]
    return row


def run_sweep(dtype):
    """Times every SWEEP tile configuration on the en-2048 and 100-1280 cases."""
    import xlm_fast.triton_kernels.attention as attention

    rows = []
    for name, batch, heads, seq, head_dim, mask in CASES:
        if mask not in ("full", "lengths"):
            continue
        q, k, v, lengths = make_inputs(batch, heads, seq, head_dim, mask, dtype)
        reference = sdpa_fn(q, k, v, lengths, mask)().transpose(1, 2).float()
        for block_m, block_n, warps, stages in SWEEP:
            config = dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages)
            row = dict(device_description(), case=name, dtype=str(dtype).replace("torch.", ""),
                       config=f"{block_m}x{block_n} w{warps} s{stages}")
            fn = with_patch(attention, "_launch_config", lambda _head_dim, _dtype, dropout=False, c=config: c,
                            ours_fn(q, k, v, lengths, mask))
            rows.append(time_configuration(row, fn, dense_flops(batch, heads, seq, head_dim, mask),
                                           lambda out: (out.view_as(q).float() - reference).abs().max().item()))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=RESULTS_DIR)
    parser.add_argument("--sweep", action="store_true", help="also time tile configurations")
    args = parser.parse_args()
    require_cuda_or_exit("bench_attention.py")
    rows = [run_case(*case, dtype) for dtype in (torch.bfloat16, torch.float16) for case in CASES]
    write_results(args.out_dir, "attention", rows,
                  ["case", "dtype", "mask", "ours_ms", "sdpa_ms", "ours_tflops", "sdpa_tflops", "speedup_vs_sdpa",
                   "ours_model_ms", "model_speedup_vs_sdpa", "max_abs_diff_vs_sdpa"],
                  "Attention forward: triton_kernels.attention vs torch SDPA")
    if args.sweep:
        write_results(args.out_dir, "attention_sweep", run_sweep(torch.bfloat16),
                      ["case", "dtype", "config", "ms", "tflops", "error_vs_reference", "error"],
                      "Attention tile configurations (error_vs_reference: max |difference| from SDPA)")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmark needs CUDA")


@needs_cuda
@pytest.mark.parametrize("implementation", ["triton", "sdpa"])
@pytest.mark.parametrize("case", CASES[:2], ids=[case[0] for case in CASES[:2]])
def test_attention(benchmark, case, implementation):
    name, batch, heads, seq, head_dim, mask = case
    inputs = make_inputs(batch, heads, seq, head_dim, mask, torch.bfloat16)
    benchmark_on_cuda(benchmark, (ours_fn if implementation == "triton" else sdpa_fn)(*inputs, mask))


if __name__ == "__main__":
    main()
