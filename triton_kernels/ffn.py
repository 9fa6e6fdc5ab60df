"""Linear layers of the XLM block with fused epilogues.

  * `linear_activation`: h = act(x @ W1^T + b1), act = exact erf GELU or ReLU (lin1),
    by one of two GEMMs (`gemm=`):
      "library": torch.matmul (cuBLAS) without bias, then one Triton pass that adds
                 the bias, applies the activation in fp32 and rounds once;
      "triton":  a Triton GEMM whose epilogue adds the bias and applies the activation
                 to the fp32 accumulator before the single store: on Hopper, for
                 16-bit inputs with 16-byte aligned rows, a persistent kernel whose tiles
                 move by TMA; elsewhere one with pointer loads (cp.async).
  * `linear_residual_layer_norm`: y = LN(residual + x @ W^T + b) * row_mask (lin2 and
    out_lin): library GEMM; because XLM is post-LayerNorm, bias + residual ride on the
    LayerNorm pass (triton_kernels.layer_norm), which needs the whole row anyway, so
    the (tokens, dim) sum is never written and read back.

Which GEMM for lin1 (the issue: whichever measures faster on the H100). At the
benchmark shapes (16k tokens, dim 2048) the GEMMs are ~95% of the forward's floor
(DESIGN.md: 28.3 of ~30 ms). The library path pays one extra read + write of lin1's
(tokens, 4 * dim) output, ~0.5 GB or ~0.2 ms per layer at ~3 TB/s (~8% of the layer's
GEMM time); the Triton GEMM saves that pass but a portable tl.dot GEMM (cp.async +
wgmma, no warp specialisation) may trail cuBLAS's by more than 8%. cuBLASLt's own GELU
epilogue is the tanh approximation, not XLM's erf GELU, so it is not a candidate.
bench/bench_ffn.py times both at the model's shapes; `DEFAULT_GEMM` below records the
choice. NOT YET MEASURED on an H100 (no GPU lent so far): "library" stays the default
until bench/bench_ffn.py says otherwise.
"""
import torch
import triton
import triton.language as tl

from ._utils import check_floating, check_same_device, interpreting, persistent_grid_size, tma_supported
from .layer_norm import add_layer_norm

ACTIVATIONS = ("gelu", "relu")
GEMMS = ("library", "triton")
DEFAULT_GEMM = "library"


@triton.jit
def _activation(y, GELU: tl.constexpr):
    """Exact erf GELU (x * Phi(x), as XLM's gelu) or ReLU of fp32 y."""
    if GELU:
        return 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    return tl.maximum(y, 0.0)


@triton.jit
def _grouped_tile(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row tile, column tile) of output tile number `tile`, numbered so that GROUP_M
    consecutive row tiles share each column tile: W's column tiles stay in L2."""
    tiles_per_group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (tile // tiles_per_group) * GROUP_M
    group_rows = tl.minimum(tl.cdiv(M, BLOCK_M) - first_m, GROUP_M)
    return first_m + (tile % tiles_per_group) % group_rows, (tile % tiles_per_group) // group_rows


@triton.jit
def _matmul_bias_activation_kernel(
    x_ptr,  # (M, K) activations, last dim contiguous
    w_ptr,  # (N, K) nn.Linear weight, last dim contiguous: read as W^T tiles (BLOCK_K, BLOCK_N)
    bias_ptr,  # (N,)
    out_ptr,  # (M, N) contiguous: act(x @ W^T + bias)
    M, N, K,
    stride_xm,  # x row stride in elements
    stride_wn,  # weight row stride in elements
    GELU: tl.constexpr,  # exact erf GELU when True, ReLU otherwise
    EVEN_K: tl.constexpr,  # K % BLOCK_K == 0: the K loop needs no bounds mask
    UPCAST_OPERANDS: tl.constexpr,  # feed tl.dot fp32 copies (bf16 under the interpreter)
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs (no TF32), "tf32" otherwise
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,  # row tiles visited together so that W's column tiles stay in L2
):
    pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # rows / columns past M / N re-read valid ones (wrapped), so tile loads need no
    # M / N masks; the store drops them
    rows = (offs_m % M).to(tl.int64)
    cols = (offs_n % N).to(tl.int64)
    x_tile = x_ptr + rows[:, None] * stride_xm + offs_k[None, :]  # (BLOCK_M, BLOCK_K)
    w_tile = w_ptr + cols[None, :] * stride_wn + offs_k[:, None]  # (BLOCK_K, BLOCK_N) = W^T tile

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(x_tile)
            b = tl.load(w_tile)
        else:
            k_valid = offs_k < K - k * BLOCK_K
            a = tl.load(x_tile, mask=k_valid[None, :], other=0.0)
            b = tl.load(w_tile, mask=k_valid[:, None], other=0.0)
        if UPCAST_OPERANDS:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        x_tile += BLOCK_K
        w_tile += BLOCK_K

    acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    y = _activation(acc, GELU)
    out = out_ptr + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=(offs_m < M)[:, None] & (offs_n < N)[None, :])


@triton.jit
def _matmul_bias_activation_tma_kernel(
    x_desc,  # TMA descriptor of x (M, K), blocks (BLOCK_M, BLOCK_K)
    w_desc,  # TMA descriptor of the nn.Linear weight (N, K), blocks (BLOCK_N, BLOCK_K)
    out_desc,  # TMA descriptor of out (M, N), blocks (BLOCK_M, BLOCK_N): act(x @ W^T + bias)
    bias_ptr,  # (N,)
    M, N, K,
    num_programs,  # persistent grid size (at most the GPU's multiprocessor count)
    GELU: tl.constexpr,  # exact erf GELU when True, ReLU otherwise
    UPCAST_OPERANDS: tl.constexpr,  # feed tl.dot fp32 copies (bf16 under the interpreter)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,  # row tiles visited together so that W's column tiles stay in L2
):
    """The same GEMM as _matmul_bias_activation_kernel, for Hopper: tiles move by the
    bulk tensor copy engine (TMA), which zero-fills loads past M / N / K and clips
    stores, so there is no address or mask arithmetic in registers; a persistent grid
    walks the output tiles, and flattening the tile and K loops into one software
    pipeline lets the next tile's loads overlap this tile's epilogue (sm_90 compile:
    155 -> 118 registers; warp_specialize=True changed nothing there, no setmaxnreg)."""
    k_tiles = tl.cdiv(K, BLOCK_K)
    n_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(0), n_tiles, num_programs, flatten=True):
        pid_m, pid_n = _grouped_tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(k_tiles):
            a = x_desc.load([off_m, k * BLOCK_K])
            b = w_desc.load([off_n, k * BLOCK_K])
            if UPCAST_OPERANDS:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, tl.trans(b), acc)  # 16-bit inputs only: their products are exact

        offs_n = off_n + tl.arange(0, BLOCK_N)
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        out_desc.store([off_m, off_n], _activation(acc, GELU).to(out_desc.dtype))


def _gemm_launch_config(dtype: torch.dtype) -> dict:
    """Tiles for both Triton GEMM kernels. 16-bit inputs on an H100: 128 x 128 x 64, 8
    warps, 4 stages. From the sm_90 compile (bench/sm90_compile_report.py; no GPU timing
    yet), with the erf epilogue: pointer kernel 115 registers, 128 KB shared memory; TMA
    kernel 118 registers, 160 KB; no spills. 128 x 256 tiles spill (255 registers) in
    both, though not without the epilogue. bench/bench_ffn.py --sweep times the
    alternatives. Smaller tiles for fp32 and under the interpreter."""
    if interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, num_warps=4, num_stages=3)
    return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4)


def _tma_eligible(*tensors: torch.Tensor) -> bool:
    """16-bit inputs (fp32's exact FMA dot spilled 8 KB per thread in the TMA kernel on
    sm_90) on Hopper or newer (or the interpreter), with 16-byte aligned bases and row
    strides and contiguous rows, as TMA needs."""
    aligned = all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0
                  for t in tensors)
    return aligned and tensors[0].dtype != torch.float32 and tma_supported(tensors[0].device)


def _triton_linear_activation(x2d, weight, bias, activation):
    M, K = x2d.shape
    N = weight.shape[0]
    out = torch.empty((M, N), dtype=x2d.dtype, device=x2d.device)
    if M == 0:
        return out
    config = _gemm_launch_config(x2d.dtype)
    if _tma_eligible(x2d, weight, out):
        from triton.tools.tensor_descriptor import TensorDescriptor

        block_m, block_n, block_k = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
        n_tiles = triton.cdiv(M, block_m) * triton.cdiv(N, block_n)
        programs = min(n_tiles, persistent_grid_size(x2d.device))
        _matmul_bias_activation_tma_kernel[(programs,)](
            TensorDescriptor.from_tensor(x2d, [block_m, block_k]),
            TensorDescriptor.from_tensor(weight, [block_n, block_k]),
            TensorDescriptor.from_tensor(out, [block_m, block_n]),
            bias, M, N, K, programs,
            GELU=activation == "gelu",
            UPCAST_OPERANDS=interpreting() and x2d.dtype == torch.bfloat16,
            **config,
        )
        return out
    grid = (triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]),)
    _matmul_bias_activation_kernel[grid](
        x2d, weight, bias, out, M, N, K, x2d.stride(0), weight.stride(0),
        GELU=activation == "gelu",
        EVEN_K=K % config["BLOCK_K"] == 0,
        UPCAST_OPERANDS=interpreting() and x2d.dtype == torch.bfloat16,
        DOT_PRECISION="ieee" if x2d.dtype == torch.float32 else "tf32",
        **config,
    )
    return out


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
    y = _activation(y, GELU)
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


def linear_activation(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str = "gelu",
                      *, gemm: str = None):
    """act(x @ weight^T + bias) with act in ("gelu" = exact erf GELU, "relu").

    x: (..., in_features); weight: (out_features, in_features); bias: (out_features,);
    one dtype among fp16 / bf16 / fp32. gemm: "library" or "triton" (see the module
    docstring); None takes DEFAULT_GEMM. Returns (..., out_features) in that dtype.
    """
    gemm = DEFAULT_GEMM if gemm is None else gemm
    _check_linear(x, weight, bias)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if gemm not in GEMMS:
        raise ValueError(f"gemm must be one of {GEMMS}, got {gemm!r}")
    check_same_device(x=x, weight=weight, bias=bias)
    if gemm == "triton":
        x2d = x.reshape(-1, x.shape[-1])
        x2d = x2d if x2d.stride(-1) == 1 else x2d.contiguous()
        weight = weight if weight.stride(-1) == 1 else weight.contiguous()
        out = _triton_linear_activation(x2d, weight, bias.contiguous(), activation)
        return out.view(*x.shape[:-1], weight.shape[0])
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
