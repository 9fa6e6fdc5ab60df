"""Whole XLMModel forward: xlm_fast (Triton path) vs transformers eager,
torch.compile(transformers), the plain SDPA re-implementation (bench/xlm_sdpa_baseline.py)
eager and compiled, and the GEMM floor (torch.matmul of every linear at the same shapes).

Script: `python bench/bench_xlm_model.py [--out-dir DIR] [--dtypes bf16 fp16]
[--configs en-2048 100-1280] [--cases ...] [--no-compile]` writes xlm_model.json / .md
(rewritten after every row, so an interrupted run keeps what it measured).
pytest-benchmark: `pytest bench/bench_xlm_model.py --benchmark-only` (skips without CUDA).

"ours" runs lin1 with triton_kernels.ffn.DEFAULT_GEMM, "ours_alt_gemm" with the other
GEMM (library cuBLAS + epilogue pass, or the Triton GEMM with the epilogue fused).
Per row: median ms (triton.testing.do_bench), tokens/s (batch * seq positions), the
peak GPU memory a forward allocates beyond what was allocated before it, each
baseline's ms and our speed-up over it, and accuracy: the relative L2 error of our
output and of transformers eager's (same dtype, same weights) against an fp64 forward
of the same weights (the target: ours at most 1.5x transformers eager's).
Models have random weights (same tensors for every implementation); inputs give their
padding as `lengths` (padding ids after each row's length), except the *-mask cases,
which give the same padding as an attention_mask, as a tokenizer does.
"""
import argparse
import copy
import gc

import pytest
import torch

from common import (
    RESULTS_DIR,
    benchmark_on_cuda,
    device_description,
    median_ms,
    require_cuda_or_exit,
    with_patch,
    write_results,
)

MODEL_CONFIGS = {
    "en-2048": dict(vocab_size=30145, emb_dim=2048, n_layers=12, n_heads=16, max_position_embeddings=512),
    "100-1280": dict(vocab_size=200000, emb_dim=1280, n_layers=16, n_heads=16, max_position_embeddings=512),
}
# name -> (batch, seq, whether lengths are uniform in 64..seq rather than all seq)
CASES = {"32x512": (32, 512, False), "32x512-var": (32, 512, True), "64x128": (64, 128, False),
         "1x32": (1, 32, False), "32x512-var-mask": (32, 512, True)}
# cases whose padding is given as a tokenizer's attention_mask rather than lengths
MASK_CASES = {"32x512-var-mask"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PAD_ID = 2


def build_models(config_name, dtype):
    """(transformers XLMModel, xlm_fast XLMModel, state dict) with shared random weights."""
    import transformers

    import xlm_fast

    torch.manual_seed(0)
    hf_model = transformers.XLMModel(transformers.XLMConfig(**MODEL_CONFIGS[config_name]))
    hf_model = hf_model.to(device="cuda", dtype=dtype).eval().requires_grad_(False)
    ours = xlm_fast.XLMModel(xlm_fast.XLMConfig(**MODEL_CONFIGS[config_name])).to(device="cuda", dtype=dtype)
    ours.eval().requires_grad_(False)
    ours.load_state_dict(hf_model.state_dict())
    return hf_model, ours, ours.state_dict()


def make_batch(batch, seq, variable_lengths, seed=0):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    input_ids = torch.randint(5, 30000, (batch, seq), device="cuda", generator=generator)
    if variable_lengths:
        lengths = torch.randint(min(64, seq), seq + 1, (batch,), device="cuda", generator=generator)
    else:
        lengths = torch.full((batch,), seq, device="cuda")
    valid = torch.arange(seq, device="cuda")[None, :] < lengths[:, None]
    return input_ids.masked_fill(~valid, PAD_ID), lengths, valid.long()


def gemm_floor_fn(config, tokens, dtype):
    """Every linear of the encoder as a bare torch.matmul on (tokens, in) x (in, out)."""
    dim = config["emb_dim"]
    shapes = [(dim, 3 * dim), (dim, dim), (dim, 4 * dim), (4 * dim, dim)]
    activations = {k: torch.randn(tokens, k, device="cuda", dtype=dtype) for k in {dim, 4 * dim}}
    weights = [torch.randn(k, n, device="cuda", dtype=dtype) for k, n in shapes]

    def run():
        for _ in range(config["n_layers"]):
            for (k, _n), weight in zip(shapes, weights):
                torch.matmul(activations[k], weight)

    return run


def peak_extra_mb(fn):
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def relative_l2(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm()).item()


def bench_config(config_name, dtype_name, case_names, compile_baselines, on_row):
    import xlm_fast
    import xlm_fast.triton_kernels.ffn as ffn

    from xlm_sdpa_baseline import sdpa_xlm_forward

    dtype = DTYPES[dtype_name]
    hf_model, ours, weights = build_models(config_name, dtype)
    config = ours.config
    # fp64 copy of the same (rounded) weights; float64 takes xlm_fast's PyTorch path
    reference_model = copy.deepcopy(ours).double()
    alt_gemm = next(gemm for gemm in ffn.GEMMS if gemm != ffn.DEFAULT_GEMM)  # lin1's other GEMM, timed beside
    hf_compiled = torch.compile(hf_model) if compile_baselines else None
    sdpa_compiled = torch.compile(sdpa_xlm_forward) if compile_baselines else None
    for case_name in case_names:
        batch, seq, variable = CASES[case_name]
        input_ids, lengths, attention_mask = make_batch(batch, seq, variable)
        padding = dict(attention_mask=attention_mask) if case_name in MASK_CASES else dict(lengths=lengths)
        with torch.inference_mode():
            candidates = {
                "ours": lambda: ours(input_ids, **padding).last_hidden_state,
                "ours_alt_gemm": with_patch(ffn, "DEFAULT_GEMM", alt_gemm,
                                            lambda: ours(input_ids, **padding).last_hidden_state),
                "hf_eager": lambda: hf_model(input_ids, **padding).last_hidden_state,
                "sdpa_eager": lambda: sdpa_xlm_forward(weights, config, input_ids, attention_mask),
                "gemm_floor": gemm_floor_fn(MODEL_CONFIGS[config_name], batch * seq, dtype),
            }
            if compile_baselines:
                candidates["hf_compiled"] = lambda: hf_compiled(input_ids, **padding).last_hidden_state
                candidates["sdpa_compiled"] = lambda: sdpa_compiled(weights, config, input_ids, attention_mask)
            assert xlm_fast.backend.select_backend(
                input_ids.device, dtype=dtype, output_attentions=False, uses_cache=False,
                dropout=0.0) == "triton", "xlm_fast would not take its Triton path here"
            reference = reference_model(input_ids, **padding).last_hidden_state
            ours_error = relative_l2(candidates["ours"](), reference)
            alt_gemm_error = relative_l2(candidates["ours_alt_gemm"](), reference)
            hf_error = relative_l2(candidates["hf_eager"](), reference)
            del reference
            row = dict(device_description(), model=config_name, case=case_name, dtype=dtype_name, batch=batch,
                       seq=seq, variable_lengths=variable, default_gemm=ffn.DEFAULT_GEMM, alt_gemm=alt_gemm,
                       rel_l2_ours_alt_gemm_vs_fp64=alt_gemm_error, rel_l2_ours_vs_fp64=ours_error,
                       rel_l2_hf_eager_vs_fp64=hf_error, error_ratio_vs_hf_eager=ours_error / hf_error)
            for name, fn in candidates.items():
                fn()  # compile / autotune outside the timing
                row[f"{name}_ms"] = median_ms(fn)
                row[f"{name}_peak_extra_mb"] = peak_extra_mb(fn)
        row["tokens_per_s"] = batch * seq / (row["ours_ms"] / 1e3)
        for name in candidates:
            if name != "ours":
                row[f"speedup_vs_{name}"] = row[f"{name}_ms"] / row["ours_ms"]
        on_row(row)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=RESULTS_DIR)
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp16"],
                        help="fp32 too: whether fp32 models should take the fused path (exact dots, FMA units)")
    parser.add_argument("--configs", nargs="+", choices=sorted(MODEL_CONFIGS), default=list(MODEL_CONFIGS))
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--stem", default="xlm_model", help="output file name stem")
    args = parser.parse_args()
    require_cuda_or_exit("bench_xlm_model.py")

    rows = []
    columns = ["model", "case", "dtype", "ours_ms", "tokens_per_s", "ours_peak_extra_mb", "alt_gemm",
               "ours_alt_gemm_ms", "hf_eager_ms",
               "hf_compiled_ms", "sdpa_eager_ms", "sdpa_compiled_ms", "gemm_floor_ms", "speedup_vs_hf_eager",
               "speedup_vs_hf_compiled", "speedup_vs_sdpa_eager", "speedup_vs_sdpa_compiled",
               "hf_eager_peak_extra_mb", "rel_l2_ours_vs_fp64", "rel_l2_hf_eager_vs_fp64",
               "error_ratio_vs_hf_eager"]

    def on_row(row):
        rows.append(row)
        write_results(args.out_dir, args.stem, rows, columns, "XLMModel forward: xlm_fast vs baselines")

    for dtype_name in args.dtypes:
        for config_name in args.configs:
            bench_config(config_name, dtype_name, args.cases, not args.no_compile, on_row)
            gc.collect()  # the models of that configuration, before the next one is built
            torch.cuda.empty_cache()


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmark needs CUDA")


@pytest.fixture(scope="module")
def en_2048_models():
    return build_models("en-2048", torch.bfloat16)


@needs_cuda
@pytest.mark.parametrize("implementation", ["xlm_fast", "transformers"])
@pytest.mark.parametrize("case_name", ["32x512-var", "1x32"])
def test_xlm_model_forward(benchmark, en_2048_models, case_name, implementation):
    hf_model, ours, _ = en_2048_models
    model = ours if implementation == "xlm_fast" else hf_model
    input_ids, lengths, _ = make_batch(*CASES[case_name])

    def forward():
        with torch.inference_mode():
            model(input_ids, lengths=lengths)

    benchmark_on_cuda(benchmark, forward)


if __name__ == "__main__":
    main()
