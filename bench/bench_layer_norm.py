"""Residual add + LayerNorm + padding mask: triton_kernels.layer_norm vs torch, GB/s.

Script: `python bench/bench_layer_norm.py [--out-dir DIR]` writes layer_norm.json / .md.
pytest-benchmark: `pytest bench/bench_layer_norm.py --benchmark-only` (skips without CUDA).
GB/s counts the bytes that must move: read x and residual, write y (weights and the
mask are negligible); torch's version moves more because it materialises the sum.
"""
import argparse

import pytest
import torch

from common import RESULTS_DIR, benchmark_on_cuda, device_description, median_ms, require_cuda_or_exit, write_results

# (name, tokens, dim)
CASES = [("en-2048 32x512", 32 * 512, 2048), ("100-1280 32x512", 32 * 512, 1280), ("64x128", 64 * 128, 2048)]


def make_inputs(tokens, dim, dtype, seed=0):
    generator = torch.Generator(device="cuda").manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, device="cuda", dtype=dtype, generator=generator)

    row_mask = (torch.rand(tokens, device="cuda", generator=generator) > 0.2).to(dtype)
    return rand(tokens, dim), rand(tokens, dim), rand(dim), rand(dim), rand(dim), row_mask


def ours_fn(x, residual, residual_bias, weight, bias, row_mask):
    from xlm_fast.triton_kernels.layer_norm import add_layer_norm

    return lambda: add_layer_norm(x, residual, weight, bias, 1e-12, residual_bias=residual_bias, row_mask=row_mask)


def torch_fn(x, residual, residual_bias, weight, bias, row_mask):
    dim = x.shape[-1]
    return lambda: torch.nn.functional.layer_norm(x + (residual + residual_bias), (dim,), weight, bias,
                                                  1e-12) * row_mask[:, None]


def run_case(name, tokens, dim, dtype):
    inputs = make_inputs(tokens, dim, dtype)
    ours, reference = ours_fn(*inputs), torch_fn(*inputs)
    max_abs_diff = (ours().float() - reference().float()).abs().max().item()
    ours_ms, torch_ms = median_ms(ours), median_ms(reference)
    moved_bytes = 3 * tokens * dim * inputs[0].element_size()
    return dict(device_description(), case=name, dtype=str(dtype).replace("torch.", ""), tokens=tokens, dim=dim,
                ours_ms=ours_ms, torch_ms=torch_ms, ours_gbps=moved_bytes / ours_ms / 1e6,
                torch_gbps=moved_bytes / torch_ms / 1e6, speedup_vs_torch=torch_ms / ours_ms,
                max_abs_diff_vs_torch=max_abs_diff)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=RESULTS_DIR)
    args = parser.parse_args()
    require_cuda_or_exit("bench_layer_norm.py")
    rows = [run_case(*case, dtype) for dtype in (torch.bfloat16, torch.float16) for case in CASES]
    write_results(args.out_dir, "layer_norm", rows,
                  ["case", "dtype", "ours_ms", "torch_ms", "ours_gbps", "torch_gbps", "speedup_vs_torch",
                   "max_abs_diff_vs_torch"],
                  "Residual + LayerNorm + mask: triton_kernels.layer_norm vs torch")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmark needs CUDA")


@needs_cuda
@pytest.mark.parametrize("implementation", ["triton", "torch"])
@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_add_layer_norm(benchmark, case, implementation):
    name, tokens, dim = case
    inputs = make_inputs(tokens, dim, torch.bfloat16)
    benchmark_on_cuda(benchmark, (ours_fn if implementation == "triton" else torch_fn)(*inputs))


if __name__ == "__main__":
    main()
