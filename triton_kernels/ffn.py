"""Linear layers of the XLM block with fused epilogues.

  * `linear_activation`: h = act(x @ W1^T + b1), act = exact erf GELU or ReLU (lin1),
    by one of two GEMMs (`gemm=`):
      "library": torch.matmul (cuBLAS) without bias, then one Triton pass that adds
                 the bias, applies the activation in fp32 and rounds once;
      "triton":  a Triton GEMM whose epilogue adds the bias and applies the activation
                 to the fp32 accumulator before the single store: on Hopper, for
                 16-bit inputs with 16-byte aligned rows, a persistent kernel whose tiles
                 move by TMA; elsewhere one with pointer loads (cp.async).
  * `linear_residual_layer_norm`: y = LN(residual + dropout(x @ W^T + b)) * row_mask
    (lin2 and out_lin; dropout only with dropout_p > 0): library GEMM; because XLM is
    post-LayerNorm, bias, dropout and residual ride on the LayerNorm pass
    (triton_kernels.layer_norm), which needs the whole row anyway, so the (tokens, dim)
    sum is never written and read back.
  * `feed_forward_residual_layer_norm`: the two chained, XLM's whole feed-forward block
    LN(residual + dropout(act(x @ W1^T + b1) @ W2^T + b2)) * row_mask.

Backward of `linear_activation` (autograd.Function `_LinearActivation`): the forward
keeps x, W and the GEMM output before bias, p = x @ W1^T rounded to the dtype (the
library path writes the activation to a new tensor instead of over p; the Triton
epilogue stores p beside it); one Triton pass recomputes pre = p + b1 in fp32 (the
library forward's pre bit for bit, the Triton one's up to p's rounding) and writes
dpre = dh * act'(pre), rounded once; then dx = dpre @ W1, dW1 = dpre^T @ x, db1 = the
fp32 column sum of dpre (library GEMMs). Saving p costs what eager PyTorch saves for
its activation's backward, the (tokens, 4 * dim) GEMM output; recomputing the GEMM
instead would add half of lin1's backward FLOPs.
`linear_residual_layer_norm` is differentiable through torch.matmul and add_layer_norm.
In `feed_forward_residual_layer_norm` (autograd.Function `_FeedForwardProjection` for
act(x @ W1^T + b1) @ W2^T) h is not kept for lin2's dW2 = dy^T @ h, as eager PyTorch
and the two calls keep it: the backward recomputes h = act(p + b1) from the saved p
(one elementwise pass, the library forward's h bit for bit, the Triton epilogue's up to
p's rounding), so a layer keeps one (tokens, 4 * dim) tensor instead of two.

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
from torch.autograd.function import once_differentiable

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
def _activation_derivative(y, GELU: tl.constexpr):
    """d act / dy of fp32 y: Phi(y) + y * phi(y) for erf GELU, 1 where y > 0 else 0 for ReLU."""
    if GELU:
        cdf = 0.5 * (1.0 + tl.math.erf(y * 0.7071067811865476))
        return cdf + y * tl.exp(-0.5 * y * y) * 0.3989422804014327  # 1 / sqrt(2 pi)
    return tl.where(y > 0.0, 1.0, 0.0)


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
    pre_ptr,  # (M, N) contiguous out: x @ W^T before bias, for the backward; written when STORE_PRE
    M, N, K,
    stride_xm,  # x row stride in elements
    stride_wn,  # weight row stride in elements
    GELU: tl.constexpr,  # exact erf GELU when True, ReLU otherwise
    STORE_PRE: tl.constexpr,  # gradients wanted: store the GEMM output before bias too
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

    tile = offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    tile_valid = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    if STORE_PRE:
        tl.store(pre_ptr + tile, acc.to(pre_ptr.dtype.element_ty), mask=tile_valid)
    acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    y = _activation(acc, GELU)
    tl.store(out_ptr + tile, y.to(out_ptr.dtype.element_ty), mask=tile_valid)


@triton.jit
def _matmul_bias_activation_tma_kernel(
    x_desc,  # TMA descriptor of x (M, K), blocks (BLOCK_M, BLOCK_K)
    w_desc,  # TMA descriptor of the nn.Linear weight (N, K), blocks (BLOCK_N, BLOCK_K)
    out_desc,  # TMA descriptor of out (M, N), blocks (BLOCK_M, BLOCK_N): act(x @ W^T + bias)
    pre_desc,  # TMA descriptor of pre (M, N), blocks (BLOCK_M, BLOCK_N): x @ W^T; stored when STORE_PRE
    bias_ptr,  # (N,)
    M, N, K,
    num_programs,  # persistent grid size (at most the GPU's multiprocessor count)
    GELU: tl.constexpr,  # exact erf GELU when True, ReLU otherwise
    STORE_PRE: tl.constexpr,  # gradients wanted: store the GEMM output before bias too
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

        if STORE_PRE:
            pre_desc.store([off_m, off_n], acc.to(pre_desc.dtype))
        offs_n = off_n + tl.arange(0, BLOCK_N)
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        out_desc.store([off_m, off_n], _activation(acc, GELU).to(out_desc.dtype))


def _gemm_launch_config(dtype: torch.dtype) -> dict:
    """Tiles for both Triton GEMM kernels. 16-bit inputs on an H100: 128 x 128 x 64, 8
    warps, 4 stages. From the sm_90 compile (bench/sm90_compile_report.py; no GPU timing
    yet), with the erf epilogue: pointer kernel 115 registers, 128 KB shared memory; TMA
    kernel 118 registers, 160 KB; no spills. 128 x 256 tiles spill (255 registers) in
    both, though not without the epilogue. bench/bench_ffn.py --sweep times the
    alternatives. Smaller tiles for fp32 (exact FMA dots): 128 x 64 x 32, 8 warps, 3
    stages, 128-198 registers, 48 KB, no spills (4 warps took 255 and spilled 32 B with
    the erf epilogue, 112 B storing the pre-activation too); and under the interpreter."""
    if interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, num_warps=8, num_stages=3)
    return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4)


def _tma_eligible(*tensors: torch.Tensor) -> bool:
    """16-bit inputs (fp32's exact FMA dot spilled 8 KB per thread in the TMA kernel on
    sm_90) on Hopper or newer (or the interpreter), with 16-byte aligned bases and row
    strides and contiguous rows, as TMA needs."""
    aligned = all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0
                  for t in tensors)
    return aligned and tensors[0].dtype != torch.float32 and tma_supported(tensors[0].device)


def _triton_linear_activation(x2d, weight, bias, activation, store_pre):
    """(act(x2d @ weight^T + bias), x2d @ weight^T rounded to the dtype or None unless
    store_pre), both (M, N) contiguous."""
    M, K = x2d.shape
    N = weight.shape[0]
    out = torch.empty((M, N), dtype=x2d.dtype, device=x2d.device)
    pre = torch.empty_like(out) if store_pre else None
    if M == 0:
        return out, pre
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
            TensorDescriptor.from_tensor(pre if store_pre else out, [block_m, block_n]),
            bias, M, N, K, programs,
            GELU=activation == "gelu",
            STORE_PRE=store_pre,
            UPCAST_OPERANDS=interpreting() and x2d.dtype == torch.bfloat16,
            **config,
        )
        return out, pre
    grid = (triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]),)
    _matmul_bias_activation_kernel[grid](
        x2d, weight, bias, out, pre if store_pre else out, M, N, K, x2d.stride(0), weight.stride(0),
        GELU=activation == "gelu",
        STORE_PRE=store_pre,
        EVEN_K=K % config["BLOCK_K"] == 0,
        UPCAST_OPERANDS=interpreting() and x2d.dtype == torch.bfloat16,
        DOT_PRECISION="ieee" if x2d.dtype == torch.float32 else "tf32",
        **config,
    )
    return out, pre


@triton.jit
def _bias_activation_kernel(
    y_ptr,  # (rows, n_cols) GEMM output x @ W^T, contiguous
    bias_ptr,  # (n_cols,) linear bias
    out_ptr,  # (rows, n_cols) contiguous out: act(y + bias); y_ptr itself in inference (in place)
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
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _activation_backward_kernel(
    grad_ptr,  # (rows, n_cols) dL/dh, contiguous
    y_ptr,  # (rows, n_cols) saved GEMM output x @ W^T before bias, contiguous
    bias_ptr,  # (n_cols,) linear bias
    out_ptr,  # (rows, n_cols) contiguous out: dL/dpre = dh * act'(y + bias)
    n_elements,  # rows * n_cols
    n_cols,  # output features
    GELU: tl.constexpr,  # exact erf GELU when True, ReLU otherwise
    BLOCK: tl.constexpr,  # elements per program
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < n_elements
    pre = tl.load(y_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    pre += tl.load(bias_ptr + offs % n_cols, mask=valid, other=0.0).to(tl.float32)  # as the forward's epilogue
    grad = tl.load(grad_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (grad * _activation_derivative(pre, GELU)).to(out_ptr.dtype.element_ty), mask=valid)


def _elementwise_launch(n_elements):
    """(grid, BLOCK, num_warps) of the elementwise epilogue kernels."""
    block = 1024 if interpreting() else 2048
    return (triton.cdiv(n_elements, block),), block, 1 if interpreting() else 8


def _bias_activation(y2d, bias, activation, out2d):
    """out2d = act(y2d + bias); out2d may be y2d (in place)."""
    grid, block, num_warps = _elementwise_launch(y2d.numel())
    _bias_activation_kernel[grid](
        y2d, bias, out2d, y2d.numel(), y2d.shape[1],
        GELU=activation == "gelu",
        BLOCK=block,
        num_warps=num_warps,
    )
    return out2d


def _activation_backward(grad2d, y2d, bias, activation):
    """dh * act'(y2d + bias) (rows, n_cols) in dh's dtype, from the saved y2d = x @ W^T."""
    out = torch.empty_like(y2d, dtype=grad2d.dtype)
    if out.numel() == 0:
        return out
    grid, block, num_warps = _elementwise_launch(out.numel())
    _activation_backward_kernel[grid](
        grad2d, y2d, bias, out, out.numel(), y2d.shape[1],
        GELU=activation == "gelu",
        BLOCK=block,
        num_warps=num_warps,
    )
    return out


def _check_linear(x, weight, bias):
    check_floating("x", x)
    _check_weight_and_bias(weight, bias, x.shape[-1] if x.dim() else None, x.dtype)


def _check_weight_and_bias(weight, bias, in_features, dtype, names=("weight", "bias")):
    """weight (out_features, in_features) and bias (out_features,) in `dtype`, the input's;
    in_features None: a 0-d input, which no weight fits."""
    weight_name, bias_name = names
    check_floating(weight_name, weight)
    check_floating(bias_name, bias)
    if weight.dim() != 2 or in_features is None or weight.shape[1] != in_features:
        raise ValueError(f"{weight_name} must be (out_features, {'?' if in_features is None else in_features}), "
                         f"got {tuple(weight.shape)}")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"{bias_name} must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if weight.dtype != dtype or bias.dtype != dtype:
        raise TypeError(f"the input, {weight_name} and {bias_name} must have one dtype, "
                        f"got {dtype}, {weight.dtype}, {bias.dtype}")


def _linear_activation_forward(x, weight, bias, activation, gemm, save_pre):
    """(act(x @ weight^T + bias) (..., N), and when save_pre the GEMM output before bias
    x @ weight^T as (M, N) in x's dtype, else None). bias contiguous."""
    n = weight.shape[0]
    if gemm == "triton":
        x2d = x.reshape(-1, x.shape[-1])
        x2d = x2d if x2d.stride(-1) == 1 else x2d.contiguous()
        weight = weight if weight.stride(-1) == 1 else weight.contiguous()
        out, pre = _triton_linear_activation(x2d, weight, bias, activation, save_pre)
        return out.view(*x.shape[:-1], n), pre
    y = torch.matmul(x, weight.t())  # library GEMM, no bias: the epilogue adds it in fp32
    y2d = y.view(-1, n)
    out2d = torch.empty_like(y2d) if save_pre else y2d  # in place unless y is kept for the backward
    _bias_activation(y2d, bias, activation, out2d)
    return out2d.view(y.shape), (y2d if save_pre else None)


class _LinearActivation(torch.autograd.Function):
    """linear_activation with its backward (module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation, gemm):
        out, pre = _linear_activation_forward(x, weight, bias, activation, gemm, save_pre=True)
        ctx.save_for_backward(x, weight, bias, pre)
        ctx.activation = activation
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable
    def backward(ctx, grad_out):
        x, weight, bias, pre = ctx.saved_tensors
        grad_pre = _activation_backward(grad_out.reshape(pre.shape).contiguous(), pre, bias, ctx.activation)  # (M, N)
        return *_linear_grads(grad_pre, x, weight, bias, ctx.needs_input_grad[:3]), None, None


def _linear_grads(grad_pre, x, weight, bias, needs):
    """(dx, dW, db) of pre = x @ W^T + b from dpre (M, N), None where `needs` says no."""
    needs_x, needs_weight, needs_bias = needs
    grad_x = torch.matmul(grad_pre, weight).view(x.shape) if needs_x else None
    grad_weight = torch.matmul(grad_pre.t(), x.reshape(-1, x.shape[-1])) if needs_weight else None
    grad_bias = grad_pre.sum(dim=0, dtype=torch.float32).to(bias.dtype) if needs_bias else None
    return grad_x, grad_weight, grad_bias


def linear_activation(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str = "gelu",
                      *, gemm: str = None):
    """act(x @ weight^T + bias) with act in ("gelu" = exact erf GELU, "relu").

    x: (..., in_features); weight: (out_features, in_features); bias: (out_features,);
    one dtype among fp16 / bf16 / fp32. gemm: "library" or "triton" (see the module
    docstring); None takes DEFAULT_GEMM. Returns (..., out_features) in that dtype,
    differentiable in x, weight and bias.
    """
    gemm = DEFAULT_GEMM if gemm is None else gemm
    _check_linear(x, weight, bias)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if gemm not in GEMMS:
        raise ValueError(f"gemm must be one of {GEMMS}, got {gemm!r}")
    check_same_device(x=x, weight=weight, bias=bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return _LinearActivation.apply(x, weight, bias.contiguous(), activation, gemm)
    # inference: the activation overwrites the GEMM output (library) or nothing else is
    # stored (Triton), and no autograd.Function call (~4 us of CPU per call)
    out, _ = _linear_activation_forward(x, weight, bias.contiguous(), activation, gemm, save_pre=False)
    return out


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
    dropout_p: float = 0.0,
):
    """LayerNorm(residual + dropout(x @ weight^T + bias, dropout_p)) * row_mask[..., None].

    x: (..., in_features); weight: (dim, in_features); bias, ln_weight, ln_bias: (dim,);
    residual: (..., dim), the residual stream (never dropped); row_mask: one value per
    row (e.g. the (batch, seq) padding mask) or None. dropout_p: XLM's dropout of the
    projection with its bias (add_layer_norm's dropout of its residual + residual_bias
    branch); 0 runs no dropout. Returns (..., dim) in x's dtype.
    """
    _check_linear(x, weight, bias)
    check_same_device(x=x, weight=weight, bias=bias)
    projected = torch.matmul(x, weight.t())  # library GEMM, no bias: the LN pass adds it
    return add_layer_norm(residual, projected, ln_weight, ln_bias, eps, residual_bias=bias, row_mask=row_mask,
                          dropout_p=dropout_p)


class _FeedForwardProjection(torch.autograd.Function):
    """act(x @ W1^T + b1) @ W2^T with its backward (module docstring): keeps x, W1, b1,
    p = x @ W1^T and W2, not h = act(p + b1), which the backward recomputes from p."""

    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, activation, gemm):
        hidden, pre = _linear_activation_forward(x, weight1, bias1, activation, gemm, save_pre=True)
        ctx.save_for_backward(x, weight1, bias1, pre, weight2)
        ctx.activation = activation
        return torch.matmul(hidden, weight2.t())  # h is freed when the caller's forward moves on

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight1, bias1, pre, weight2 = ctx.saved_tensors
        grad2d = grad_out.reshape(-1, grad_out.shape[-1])  # (M, dim)
        grad_weight2 = None
        if ctx.needs_input_grad[3]:  # dW2 = dy^T @ h, with h recomputed and dropped at once
            grad_weight2 = torch.matmul(grad2d.t(), _bias_activation(pre, bias1, ctx.activation, torch.empty_like(pre)))
        grad_pre = _activation_backward(torch.matmul(grad2d, weight2), pre, bias1, ctx.activation)  # (M, hidden)
        return *_linear_grads(grad_pre, x, weight1, bias1, ctx.needs_input_grad[:3]), grad_weight2, None, None


def feed_forward_residual_layer_norm(
    x: torch.Tensor,
    weight1: torch.Tensor,
    bias1: torch.Tensor,
    weight2: torch.Tensor,
    bias2: torch.Tensor,
    residual: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    activation: str = "gelu",
    *,
    row_mask: torch.Tensor = None,
    dropout_p: float = 0.0,
    gemm: str = None,
):
    """XLM's feed-forward block with its residual and LayerNorm:
    LN(residual + dropout(act(x @ W1^T + b1) @ W2^T + b2, dropout_p)) * row_mask[..., None].

    x: (..., dim); weight1: (hidden, dim); bias1: (hidden,); weight2: (out, hidden);
    bias2, ln_weight, ln_bias: (out,); residual: (..., out); activation, gemm as in
    linear_activation (lin1); row_mask, dropout_p as in linear_residual_layer_norm
    (lin2). Equals linear_activation followed by linear_residual_layer_norm; with
    gradients, the (..., hidden) activation is not kept for the backward but recomputed
    there, a quarter less saved per token than the two calls keep in XLM's layer
    (hidden = 4 * dim). Returns (..., out) in x's dtype.
    """
    gemm = DEFAULT_GEMM if gemm is None else gemm
    check_floating("x", x)
    _check_weight_and_bias(weight1, bias1, x.shape[-1] if x.dim() else None, x.dtype, names=("weight1", "bias1"))
    _check_weight_and_bias(weight2, bias2, weight1.shape[0], x.dtype, names=("weight2", "bias2"))
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if gemm not in GEMMS:
        raise ValueError(f"gemm must be one of {GEMMS}, got {gemm!r}")
    check_same_device(x=x, weight1=weight1, bias1=bias1, weight2=weight2, bias2=bias2)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight1, bias1, weight2)):
        projected = _FeedForwardProjection.apply(x, weight1, bias1.contiguous(), weight2, activation, gemm)
    else:
        hidden, _ = _linear_activation_forward(x, weight1, bias1.contiguous(), activation, gemm, save_pre=False)
        projected = torch.matmul(hidden, weight2.t())
    return add_layer_norm(residual, projected, ln_weight, ln_bias, eps, residual_bias=bias2, row_mask=row_mask,
                          dropout_p=dropout_p)
