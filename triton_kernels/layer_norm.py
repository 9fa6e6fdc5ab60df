"""Residual add + LayerNorm + padding-mask multiply in one pass over each row.

XLM blocks are post-LayerNorm: x = LN(x + sublayer(x)), and after the feed-forward
LN the hidden state is multiplied by the padding mask. One program reads a row of x,
the residual branch (and optionally its bias, so the linear layer producing it can
skip its own bias pass), normalises in fp32 and writes
    y = LayerNorm(x + residual + residual_bias) * row_mask.
"""
import torch
import triton
import triton.language as tl

from ._utils import check_floating, check_same_device, interpreting, row_mask_for_kernel


@triton.jit
def normalize_row(x, cols, col_valid, n_cols, eps, weight_ptr, bias_ptr):
    """LayerNorm of one fp32 row x (BLOCK_N,) whose columns past n_cols are zeros:
    (x - mean) / sqrt(var + eps) * weight + bias, statistics over the n_cols real ones."""
    mean = tl.sum(x, axis=0) / n_cols
    centered = tl.where(col_valid, x - mean, 0.0)
    variance = tl.sum(centered * centered, axis=0) / n_cols
    weight = tl.load(weight_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)
    return centered / tl.sqrt(variance + eps) * weight + bias


@triton.jit
def _add_layer_norm_kernel(
    x_ptr,  # (rows, n_cols) input rows, last dim contiguous
    residual_ptr,  # (rows, n_cols) residual branch; read when HAS_RESIDUAL
    residual_bias_ptr,  # (n_cols,) bias added to the residual branch; read when HAS_RESIDUAL_BIAS
    weight_ptr,  # (n_cols,) LayerNorm gain
    bias_ptr,  # (n_cols,) LayerNorm bias
    row_mask_ptr,  # (rows,) padding mask multiplied into the output; read when HAS_ROW_MASK
    out_ptr,  # (rows, n_cols) output, contiguous
    stride_x_row,  # x row stride in elements
    stride_residual_row,  # residual row stride in elements
    n_cols,  # hidden size
    eps,  # LayerNorm epsilon
    HAS_RESIDUAL: tl.constexpr,
    HAS_RESIDUAL_BIAS: tl.constexpr,
    HAS_ROW_MASK: tl.constexpr,
    BLOCK_N: tl.constexpr,  # n_cols padded to a power of two
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    col_valid = cols < n_cols

    x = tl.load(x_ptr + row * stride_x_row + cols, mask=col_valid, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(residual_ptr + row * stride_residual_row + cols, mask=col_valid, other=0.0).to(tl.float32)
    if HAS_RESIDUAL_BIAS:
        x += tl.load(residual_bias_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)

    y = normalize_row(x, cols, col_valid, n_cols, eps, weight_ptr, bias_ptr)
    if HAS_ROW_MASK:
        y = y * tl.load(row_mask_ptr + row).to(tl.float32)
    tl.store(out_ptr + row * n_cols + cols, y.to(out_ptr.dtype.element_ty), mask=col_valid)


def _num_warps(block_n: int) -> int:
    if interpreting():
        return 1
    return max(1, min(16, block_n // 256))


def _add_layer_norm(x2d, residual2d, residual_bias, weight, bias, eps, row_mask):
    n_rows, n_cols = x2d.shape
    out = torch.empty((n_rows, n_cols), dtype=x2d.dtype, device=x2d.device)
    block_n = triton.next_power_of_2(n_cols)
    _add_layer_norm_kernel[(n_rows,)](
        x2d,
        residual2d if residual2d is not None else x2d,
        residual_bias if residual_bias is not None else weight,
        weight,
        bias,
        row_mask if row_mask is not None else weight,
        out,
        x2d.stride(0),
        residual2d.stride(0) if residual2d is not None else 0,
        n_cols,
        eps,
        HAS_RESIDUAL=residual2d is not None,
        HAS_RESIDUAL_BIAS=residual_bias is not None,
        HAS_ROW_MASK=row_mask is not None,
        BLOCK_N=block_n,
        num_warps=_num_warps(block_n),
    )
    return out


def _rows(tensor: torch.Tensor, n_cols: int) -> torch.Tensor:
    """(..., n_cols) -> (rows, n_cols) with a contiguous last dim (a view when possible)."""
    rows = tensor.reshape(-1, n_cols)
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    *,
    residual_bias: torch.Tensor = None,
    row_mask: torch.Tensor = None,
) -> torch.Tensor:
    """LayerNorm(x + residual + residual_bias) * row_mask[..., None], computed in fp32.

    x: (..., dim) fp16 / bf16 / fp32. residual: same shape and dtype as x, or None.
    weight, bias: (dim,) LayerNorm parameters. residual_bias: (dim,) or None.
    row_mask: one value per row of x, e.g. the (batch, seq) padding mask, or None.
    Returns a new tensor shaped and typed like x.
    """
    check_floating("x", x)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must be (..., dim) with dim > 0, got shape {tuple(x.shape)}")
    n_cols = x.shape[-1]
    if residual is not None:
        check_floating("residual", residual)
        if residual.shape != x.shape or residual.dtype != x.dtype:
            raise ValueError(
                f"residual must match x ({tuple(x.shape)}, {x.dtype}), got {tuple(residual.shape)}, {residual.dtype}"
            )
    for name, vector in (("weight", weight), ("bias", bias), ("residual_bias", residual_bias)):
        if vector is None and name == "residual_bias":
            continue
        check_floating(name, vector)
        if vector.shape != (n_cols,):
            raise ValueError(f"{name} must have shape ({n_cols},), got {tuple(vector.shape)}")
    if not isinstance(eps, (int, float)) or eps <= 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    n_rows = x.numel() // n_cols
    mask_flat = row_mask_for_kernel("row_mask", row_mask, n_rows) if row_mask is not None else None
    check_same_device(x=x, residual=residual, weight=weight, bias=bias, residual_bias=residual_bias, row_mask=mask_flat)

    out = _add_layer_norm(
        _rows(x, n_cols),
        _rows(residual, n_cols) if residual is not None else None,
        residual_bias.contiguous() if residual_bias is not None else None,
        weight.contiguous(),
        bias.contiguous(),
        float(eps),
        mask_flat,
    )
    return out.view(x.shape)
