"""Linear layers of the XLM block with fused epilogues: library GEMM + one Triton pass.

  * `linear_activation`: h = act(x @ W1^T + b1), act = exact erf GELU or ReLU (lin1).
  * `linear_residual_layer_norm`: y = LN(residual + x @ W^T + b) * row_mask (lin2 and
    out_lin). Because XLM is post-LayerNorm, the bias + residual epilogue is done by the
    LayerNorm kernel (triton_kernels.layer_norm) in the same pass that normalises, so
    the (tokens, dim) sum is never written and read back.

Why torch's library GEMM (torch.matmul -> cuBLAS) rather than a Triton GEMM with the
epilogue inside: at the benchmark shapes (16k tokens, dim 2048) the GEMMs are ~95% of
the floor (DESIGN.md: 28.3 of 29.8 ms, ~2.4 ms per layer) and cuBLAS on an H100 runs
them with wgmma/TMA kernels that a portable tl.dot GEMM (Triton 3.6, no warp
specialisation) typically trails by 10-30%. What the split costs is one extra
read + write of lin1's (tokens, 4 * dim) output for bias + GELU: ~0.5 GB, ~0.2 ms per
layer at ~3 TB/s, i.e. ~8% of the layer's GEMM time, less than such a gap. (cuBLASLt's
own GELU epilogue is the tanh approximation, not XLM's exact erf GELU.) For out_lin and
lin2 nothing is lost: post-LN needs the whole row anyway, so bias + residual ride on
the LayerNorm pass. The GEMMs run without bias; the epilogue reads their output, adds
bias (and activation) in fp32 and rounds once to the output dtype. For tiny token counts (batch 1 x 32) a fused Triton
GEMM could save a launch per linear. This choice NEEDS CONFIRMING ON THE H100
(bench/bench_xlm_model.py, gemm_floor column): nothing could be timed on a GPU when
this was written.
"""
import torch
import triton
import triton.language as tl

from ._utils import check_floating, check_same_device, interpreting
from .layer_norm import add_layer_norm

ACTIVATIONS = ("gelu", "relu")


@triton.jit
def _bias_activation_kernel(
    y_ptr,  # (rows, n_cols) GEMM output x @ W^T, contiguous; overwritten with act(y + bias)
    bias_ptr,  # (n_cols,) linear bias
    n_elements,  # rows * n_cols
    n_cols,  # output features
    GELU: tl.constexpr,  # exact erf GELU when True, ReLU otherwise
    BLOCK: tl.constexpr,  # elements per program
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < n_elements
    y = tl.load(y_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    y += tl.load(bias_ptr + offs % n_cols, mask=valid, other=0.0).to(tl.float32)
    if GELU:
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))  # x * Phi(x), as XLM's gelu
    else:
        y = tl.maximum(y, 0.0)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=valid)


def _bias_activation_(y2d, bias, activation):
    n_elements = y2d.numel()
    block = 1024 if interpreting() else 2048
    _bias_activation_kernel[(triton.cdiv(n_elements, block),)](
        y2d, bias, n_elements, y2d.shape[1],
        GELU=activation == "gelu",
        BLOCK=block,
        num_warps=1 if interpreting() else 8,
    )
    return y2d


def _check_linear(x, weight, bias):
    check_floating("x", x)
    check_floating("weight", weight)
    check_floating("bias", bias)
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"weight must be (out_features, {x.shape[-1] if x.dim() else '?'}), got {tuple(weight.shape)}"
        )
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise TypeError(f"x, weight and bias must have one dtype, got {x.dtype}, {weight.dtype}, {bias.dtype}")


def linear_activation(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str = "gelu"):
    """act(x @ weight^T + bias) with act in ("gelu" = exact erf GELU, "relu").

    x: (..., in_features); weight: (out_features, in_features); bias: (out_features,);
    one dtype among fp16 / bf16 / fp32. Returns (..., out_features) in that dtype.
    """
    _check_linear(x, weight, bias)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    check_same_device(x=x, weight=weight, bias=bias)
    y = torch.matmul(x, weight.t())  # library GEMM, no bias: the epilogue adds it in fp32
    _bias_activation_(y.view(-1, weight.shape[0]), bias.contiguous(), activation)
    return y


def linear_residual_layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    *,
    row_mask: torch.Tensor = None,
):
    """LayerNorm(residual + x @ weight^T + bias) * row_mask[..., None].

    x: (..., in_features); weight: (dim, in_features); bias, ln_weight, ln_bias: (dim,);
    residual: (..., dim); row_mask: one value per row (e.g. the (batch, seq) padding
    mask) or None. Returns (..., dim) in x's dtype.
    """
    _check_linear(x, weight, bias)
    check_same_device(x=x, weight=weight, bias=bias)
    projected = torch.matmul(x, weight.t())  # library GEMM, no bias: the LN pass adds it
    return add_layer_norm(residual, projected, ln_weight, ln_bias, eps, residual_bias=bias, row_mask=row_mask)
