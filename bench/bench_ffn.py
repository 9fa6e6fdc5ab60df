"""lin1 + bias + exact GELU: the two GEMMs of triton_kernels.ffn against each other and
against torch, TFLOP/s, at the XLMModel benchmark's shapes. This decides
triton_kernels.ffn.DEFAULT_GEMM.

Script: `python bench/bench_ffn.py [--out-dir DIR] [--sweep]` writes ffn.json / .md;
--sweep also times Triton GEMM tile configurations (ffn_sweep.json / .md).
pytest-benchmark: `pytest bench/bench_ffn.py --benchmark-only` (skips without CUDA).

Columns: library_gemm = the bare torch.matmul (no bias: the floor of the library
path); library = that GEMM + the Triton bias/GELU pass; triton = the Triton GEMM with
the epilogue fused (its TMA kernel on Hopper); triton_pointers = the same with the TMA
kernel off (pointer loads, cp.async); torch = F.gelu(F.linear(x, W, b)) as
transformers runs it.
Accuracy: relative L2 error against fp64 on the first 256 rows.
"""
import argparse
import itertools

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

# (name, tokens, in_features, out_features): lin1 of en-2048 and 100-1280
CASES = [
    ("en-2048 32x512", 32 * 512, 2048, 8192),
    ("100-1280 32x512", 32 * 512, 1280, 5120),
    ("en-2048 64x128", 64 * 128, 2048, 8192),
    ("en-2048 1x32", 32, 2048, 8192),
]
# Triton GEMM tile configurations compared by --sweep (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
SWEEP = [(128, 128, 64, 8, 4), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3),
         (128, 128, 64, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 128, 32, 8, 5)]


def make_inputs(tokens, in_features, out_features, dtype, seed=0):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(tokens, in_features, device="cuda", dtype=dtype, generator=generator)
    weight = torch.randn(out_features, in_features, device="cuda", dtype=dtype, generator=generator)
    weight *= in_features ** -0.5
    bias = torch.randn(out_features, device="cuda", dtype=dtype, generator=generator)
    return x, weight, bias


def without_tma(fn):
    """fn run with the Triton GEMM's TMA kernel switched off (its pointer kernel runs)."""
    import xlm_fast.triton_kernels.ffn as ffn

    return with_patch(ffn, "_tma_eligible", lambda *tensors: False, fn)


def candidates(x, weight, bias):
    from xlm_fast.triton_kernels.ffn import linear_activation

    def triton_gemm():
        return linear_activation(x, weight, bias, gemm="triton")

    return {
        "library_gemm": lambda: torch.matmul(x, weight.t()),
        "library": lambda: linear_activation(x, weight, bias, gemm="library"),
        "triton": triton_gemm,
        "triton_pointers": without_tma(triton_gemm),
        "torch": lambda: torch.nn.functional.gelu(torch.nn.functional.linear(x, weight, bias)),
    }


def relative_l2_vs_fp64(out, x, weight, bias, rows=256):
    pre = x[:rows].double() @ weight.double().t() + bias.double()
    expected = torch.nn.functional.gelu(pre)
    return ((out[:rows].double() - expected).norm() / expected.norm()).item()


def run_case(name, tokens, in_features, out_features, dtype):
    inputs = make_inputs(tokens, in_features, out_features, dtype)
    fns = candidates(*inputs)
    flops = 2.0 * tokens * in_features * out_features
    row = dict(device_description(), case=name, dtype=str(dtype).replace("torch.", ""), tokens=tokens,
               in_features=in_features, out_features=out_features)
    for implementation in ("library", "triton", "triton_pointers", "torch"):
        row[f"rel_l2_{implementation}"] = relative_l2_vs_fp64(fns[implementation](), *inputs)
    for implementation, fn in fns.items():
        row[f"{implementation}_ms"] = median_ms(fn)
        row[f"{implementation}_tflops"] = flops / row[f"{implementation}_ms"] / 1e9
    row["triton_speedup_vs_library"] = row["library_ms"] / row["triton_ms"]
    row["triton_pointers_speedup_vs_library"] = row["library_ms"] / row["triton_pointers_ms"]
    row["triton_speedup_vs_torch"] = row["torch_ms"] / row["triton_ms"]
    return row


def run_sweep(dtype):
    """Times every SWEEP configuration of both Triton GEMM kernels on the two 32x512 cases."""
    import xlm_fast.triton_kernels.ffn as ffn

    rows = []
    for name, tokens, in_features, out_features in CASES[:2]:
        x, weight, bias = make_inputs(tokens, in_features, out_features, dtype)
        for (block_m, block_n, block_k, warps, stages), kernel in itertools.product(SWEEP, ("tma", "pointers")):
            config = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, num_warps=warps,
                          num_stages=stages)
            fn = with_patch(ffn, "_gemm_launch_config", lambda _dtype, c=config: c,
                            lambda: ffn.linear_activation(x, weight, bias, gemm="triton"))
            row = dict(device_description(), case=name, dtype=str(dtype).replace("torch.", ""), kernel=kernel,
                       config=f"{block_m}x{block_n}x{block_k} w{warps} s{stages}")
            rows.append(time_configuration(row, fn if kernel == "tma" else without_tma(fn),
                                           2.0 * tokens * in_features * out_features,
                                           lambda out: relative_l2_vs_fp64(out, x, weight, bias)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=RESULTS_DIR)
    parser.add_argument("--sweep", action="store_true", help="also time Triton GEMM tile configurations")
    args = parser.parse_args()
    require_cuda_or_exit("bench_ffn.py")
    rows = [run_case(*case, dtype) for dtype in (torch.bfloat16, torch.float16) for case in CASES]
    write_results(args.out_dir, "ffn", rows,
                  ["case", "dtype", "library_gemm_ms", "library_ms", "triton_ms", "triton_pointers_ms", "torch_ms",
                   "library_tflops", "triton_tflops", "triton_pointers_tflops", "triton_speedup_vs_library",
                   "triton_pointers_speedup_vs_library", "triton_speedup_vs_torch", "rel_l2_library",
                   "rel_l2_triton", "rel_l2_triton_pointers", "rel_l2_torch"],
                  "lin1 + bias + GELU: library GEMM + epilogue vs Triton GEMM with fused epilogue")
    if args.sweep:
        write_results(args.out_dir, "ffn_sweep", run_sweep(torch.bfloat16),
                      ["case", "dtype", "kernel", "config", "ms", "tflops", "error_vs_reference", "error"],
                      "Triton GEMM (lin1 + GELU) tile configurations")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmark needs CUDA")


@needs_cuda
@pytest.mark.parametrize("implementation", ["library", "triton", "triton_pointers", "torch"])
@pytest.mark.parametrize("case", CASES[:2], ids=[case[0] for case in CASES[:2]])
def test_linear_gelu(benchmark, case, implementation):
    name, tokens, in_features, out_features = case
    inputs = make_inputs(tokens, in_features, out_features, torch.bfloat16)
    benchmark_on_cuda(benchmark, candidates(*inputs)[implementation])


if __name__ == "__main__":
    main()
