"""Residual add + LayerNorm + padding-mask multiply in one pass over each row, and its
backward.

XLM blocks are post-LayerNorm: x = LN(x + sublayer(x)), and after the feed-forward
LN the hidden state is multiplied by the padding mask. One program reads a block of
BLOCK_ROWS rows of x, the residual branch (and optionally its bias, so the linear layer
producing it can skip its own bias pass), normalises each row in fp32 and writes
    y = LayerNorm(x + residual + residual_bias) * row_mask.
BLOCK_ROWS is 1 on a GPU (a program per row) and a tile of many rows in Triton's CPU
interpreter, where the cost is per program and per op rather than per element
(_block_rows); the row-block helpers take tiles (BLOCK_ROWS, BLOCK_N) and reduce along
axis 1, and the embedding kernels use them too.

Backward, with s = x + residual + residual_bias, xhat = (s - mean) * rstd and
g = dy * row_mask (row_mask is a padding mask: it gets no gradient):
    ds = rstd * (g * w - mean(g * w) - xhat * mean(g * w * xhat))
       = dx = dresidual;  dresidual_bias = sum over rows of ds;
    dweight = sum over rows of g * xhat;  dbias = sum over rows of g.
The forward saves mean and rstd (fp32, 8 bytes per row) and keeps x and residual;
the backward recomputes s from them rather than the forward storing it: x is kept
alive by the layers that read it anyway and residual costs the same memory as s, so
recomputing saves the forward a (rows, dim) store for one more read in the backward.
Column sums are partial sums per program (each a run of consecutive rows, walked
BLOCK_ROWS at a time) in fp32, then a torch.sum over the programs: deterministic, no
atomics.

Dropout (dropout_p > 0; triton_kernels.dropout holds the random-stream contract): the
branch residual + residual_bias is the one dropped, as XLM drops a sublayer's output
(out_lin / lin2 with their bias) before adding it to the residual stream x:
    s = x + D * (residual + residual_bias),  D = keep / (1 - p) per element,
element (row, col) of the (rows, n_cols) view at Philox offset row * n_cols + col.
The backward regenerates D from the saved seed (no mask is stored): dx = ds,
dresidual = D * ds, dresidual_bias = sum over rows of D * ds; the LayerNorm parts are
unchanged. DROPOUT is a constexpr, so dropout_p == 0 compiles the kernels without it.
"""
import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ._utils import check_floating, check_same_device, interpreting, persistent_grid_size, row_mask_for_kernel
from .dropout import check_dropout_p, keep, philox_seed


@triton.jit
def layer_norm_rows(x, cols, col_valid, n_cols, eps, weight_ptr, bias_ptr):
    """LayerNorm of a block of fp32 rows x (BLOCK_ROWS, BLOCK_N) whose columns past n_cols are
    zeros: returns ((x - mean) / sqrt(var + eps) * weight + bias, mean, rstd = 1 / sqrt(var + eps)),
    the statistics (BLOCK_ROWS,) over the n_cols real columns (finite on the padding rows of a block)."""
    mean = tl.sum(x, axis=1) / n_cols
    centered = tl.where(col_valid[None, :], x - mean[:, None], 0.0)
    variance = tl.sum(centered * centered, axis=1) / n_cols
    rstd = 1.0 / tl.sqrt(variance + eps)
    weight = tl.load(weight_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)
    return centered * rstd[:, None] * weight[None, :] + bias[None, :], mean, rstd


@triton.jit
def layer_norm_rows_grad_inputs(s, rows, row_valid, cols, valid, mean_ptr, rstd_ptr, grad_out_ptr,
                                stride_grad_out_row, row_mask_ptr, HAS_ROW_MASK: tl.constexpr):
    """(xhat, g, rstd) of a block of rows of the backward: the normalised fp32 row sums s
    (BLOCK_ROWS, BLOCK_N) from the saved mean / rstd, and dL/dy times the rows' mask; both zeros
    outside valid (BLOCK_ROWS, BLOCK_N): rows < n_rows and cols < n_cols. rstd (BLOCK_ROWS,)."""
    rstd = tl.load(rstd_ptr + rows, mask=row_valid, other=0.0)
    mean = tl.load(mean_ptr + rows, mask=row_valid, other=0.0)
    xhat = tl.where(valid, (s - mean[:, None]) * rstd[:, None], 0.0)
    g = tl.load(grad_out_ptr + rows[:, None] * stride_grad_out_row + cols[None, :], mask=valid,
                other=0.0).to(tl.float32)
    if HAS_ROW_MASK:
        g = g * tl.load(row_mask_ptr + rows, mask=row_valid, other=0.0).to(tl.float32)[:, None]
    return xhat, g, rstd


@triton.jit
def layer_norm_rows_grad_sum(xhat, g, rstd, weight, n_cols):
    """dL/ds of a block of rows, fp32 (BLOCK_ROWS, BLOCK_N), zeros where xhat and g are:
    rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)) per row; weight (BLOCK_N,)."""
    g_weight = g * weight[None, :]  # zeros where xhat is
    mean_g_weight = tl.sum(g_weight, axis=1) / n_cols
    mean_g_weight_xhat = tl.sum(g_weight * xhat, axis=1) / n_cols
    return (g_weight - mean_g_weight[:, None] - xhat * mean_g_weight_xhat[:, None]) * rstd[:, None]


@triton.jit
def dropout_rows_scale(seed, rows, n_cols, cols, dropout_p):
    """fp32 (BLOCK_ROWS, BLOCK_N) factors of inverted dropout on rows `rows` of a (rows, n_cols)
    tensor: 1 / (1 - p) where the element at Philox offset row * n_cols + col is kept, else 0."""
    # int64 whatever the types of rows and cols: the stream depends on it
    offsets = rows.to(tl.int64)[:, None] * n_cols + cols.to(tl.int64)[None, :]
    return tl.where(keep(seed, offsets, dropout_p), 1.0 / (1.0 - dropout_p), 0.0)


@triton.jit
def _load_sum(x_ptr, residual_ptr, residual_bias_ptr, rows, stride_x_row, stride_residual_row, cols, col_valid,
              valid, HAS_RESIDUAL: tl.constexpr, HAS_RESIDUAL_BIAS: tl.constexpr):
    """fp32 rows x + residual + residual_bias (BLOCK_ROWS, BLOCK_N), zeros past n_cols; the forward
    and the backward add in this one order, so the backward's s is the forward's bit for bit."""
    x = tl.load(x_ptr + rows[:, None] * stride_x_row + cols[None, :], mask=valid, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(residual_ptr + rows[:, None] * stride_residual_row + cols[None, :], mask=valid,
                     other=0.0).to(tl.float32)
    if HAS_RESIDUAL_BIAS:
        x += tl.load(residual_bias_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)[None, :]
    return x


@triton.jit
def _load_dropout_sum(x_ptr, residual_ptr, residual_bias_ptr, rows, stride_x_row, stride_residual_row, cols,
                      col_valid, valid, n_cols, seed, dropout_p, HAS_RESIDUAL: tl.constexpr,
                      HAS_RESIDUAL_BIAS: tl.constexpr):
    """(s, branch_scale): fp32 rows s = x + D * (residual + residual_bias) (BLOCK_ROWS, BLOCK_N),
    zeros past n_cols, with D = branch_scale = dropout_rows_scale (residual or residual_bias present).
    The forward and the backward call it alike: the backward's s and D are the forward's bit for bit."""
    if HAS_RESIDUAL:
        branch = tl.load(residual_ptr + rows[:, None] * stride_residual_row + cols[None, :], mask=valid,
                         other=0.0).to(tl.float32)
        if HAS_RESIDUAL_BIAS:
            branch += tl.load(residual_bias_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)[None, :]
    else:
        branch = tl.load(residual_bias_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)[None, :]
    branch_scale = dropout_rows_scale(seed, rows, n_cols, cols, dropout_p)
    x = tl.load(x_ptr + rows[:, None] * stride_x_row + cols[None, :], mask=valid, other=0.0).to(tl.float32)
    return x + branch * branch_scale, branch_scale


@triton.jit
def _add_layer_norm_kernel(
    x_ptr,  # (rows, n_cols) input rows, last dim contiguous
    residual_ptr,  # (rows, n_cols) residual branch; read when HAS_RESIDUAL
    residual_bias_ptr,  # (n_cols,) bias added to the residual branch; read when HAS_RESIDUAL_BIAS
    weight_ptr,  # (n_cols,) LayerNorm gain
    bias_ptr,  # (n_cols,) LayerNorm bias
    row_mask_ptr,  # (rows,) padding mask multiplied into the output; read when HAS_ROW_MASK
    out_ptr,  # (rows, n_cols) output, contiguous
    mean_ptr,  # (rows,) fp32 out: row means, for the backward; written when STORE_STATS
    rstd_ptr,  # (rows,) fp32 out: 1 / sqrt(var + eps) per row; written when STORE_STATS
    stride_x_row,  # x row stride in elements
    stride_residual_row,  # residual row stride in elements
    n_rows,  # rows of x
    n_cols,  # hidden size
    eps,  # LayerNorm epsilon
    seed,  # Philox seed of the dropout mask; read when DROPOUT
    dropout_p,  # fp32 probability of dropping an element of residual + residual_bias; read when DROPOUT
    HAS_RESIDUAL: tl.constexpr,
    HAS_RESIDUAL_BIAS: tl.constexpr,
    HAS_ROW_MASK: tl.constexpr,
    STORE_STATS: tl.constexpr,  # gradients wanted: save mean / rstd (inference skips the stores)
    DROPOUT: tl.constexpr,  # drop the residual + residual_bias branch before the sum
    BLOCK_ROWS: tl.constexpr,  # rows per program (see _block_rows)
    BLOCK_N: tl.constexpr,  # n_cols padded to a power of two
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    if BLOCK_ROWS == 1:  # a program per row: every row is real, and constant masks fold away
        row_valid = tl.full((BLOCK_ROWS,), True, tl.int1)
    else:
        row_valid = rows < n_rows
    cols = tl.arange(0, BLOCK_N)
    col_valid = cols < n_cols
    valid = row_valid[:, None] & col_valid[None, :]

    if DROPOUT:
        x, _ = _load_dropout_sum(x_ptr, residual_ptr, residual_bias_ptr, rows, stride_x_row, stride_residual_row,
                                 cols, col_valid, valid, n_cols, seed, dropout_p, HAS_RESIDUAL, HAS_RESIDUAL_BIAS)
    else:
        x = _load_sum(x_ptr, residual_ptr, residual_bias_ptr, rows, stride_x_row, stride_residual_row, cols,
                      col_valid, valid, HAS_RESIDUAL, HAS_RESIDUAL_BIAS)
    y, mean, rstd = layer_norm_rows(x, cols, col_valid, n_cols, eps, weight_ptr, bias_ptr)
    if HAS_ROW_MASK:
        y = y * tl.load(row_mask_ptr + rows, mask=row_valid, other=0.0).to(tl.float32)[:, None]
    tl.store(out_ptr + rows[:, None] * n_cols + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=valid)
    if STORE_STATS:
        tl.store(mean_ptr + rows, mean, mask=row_valid)
        tl.store(rstd_ptr + rows, rstd, mask=row_valid)


@triton.jit
def _add_layer_norm_backward_kernel(
    grad_out_ptr,  # (rows, n_cols) dL/dy, last dim contiguous
    x_ptr,  # (rows, n_cols) forward input rows, last dim contiguous
    residual_ptr,  # (rows, n_cols) forward residual branch; read when HAS_RESIDUAL
    residual_bias_ptr,  # (n_cols,) forward residual bias; read when HAS_RESIDUAL_BIAS
    weight_ptr,  # (n_cols,) LayerNorm gain
    row_mask_ptr,  # (rows,) padding mask; read when HAS_ROW_MASK
    mean_ptr,  # (rows,) fp32 row means saved by the forward
    rstd_ptr,  # (rows,) fp32 1 / sqrt(var + eps) saved by the forward
    grad_sum_ptr,  # (rows, n_cols) out, contiguous: ds = dx (= dresidual without dropout); when STORE_GRAD_SUM
    grad_branch_ptr,  # (rows, n_cols) out, contiguous: dresidual = D * ds; written when STORE_GRAD_BRANCH
    partial_weight_ptr,  # (programs, n_cols) fp32 out: this program's rows' sum of g * xhat
    partial_bias_ptr,  # (programs, n_cols) fp32 out: this program's rows' sum of g
    partial_residual_bias_ptr,  # (programs, n_cols) fp32 out: rows' sum of ds (D * ds); when RESIDUAL_BIAS_GRAD
    stride_grad_out_row,  # grad_out row stride in elements
    stride_x_row,  # x row stride in elements
    stride_residual_row,  # residual row stride in elements
    n_rows,  # rows of x
    n_cols,  # hidden size
    rows_per_program,  # consecutive rows each program walks, BLOCK_ROWS at a time
    seed,  # Philox seed of the forward's dropout mask; read when DROPOUT
    dropout_p,  # fp32 the forward's dropout probability; read when DROPOUT
    HAS_RESIDUAL: tl.constexpr,
    HAS_RESIDUAL_BIAS: tl.constexpr,
    HAS_ROW_MASK: tl.constexpr,
    STORE_GRAD_SUM: tl.constexpr,  # x (or, without dropout, residual) wants its gradient
    STORE_GRAD_BRANCH: tl.constexpr,  # under dropout: residual wants its gradient
    RESIDUAL_BIAS_GRAD: tl.constexpr,  # residual_bias wants its gradient
    DROPOUT: tl.constexpr,  # the forward dropped the residual + residual_bias branch
    BLOCK_ROWS: tl.constexpr,  # rows per step of a program's walk (see _block_rows)
    BLOCK_N: tl.constexpr,  # n_cols padded to a power of two
):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_valid = cols < n_cols
    weight = tl.load(weight_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)
    # column sums per row of the block, reduced over the block once at the end
    sum_weight = tl.zeros((BLOCK_ROWS, BLOCK_N), dtype=tl.float32)
    sum_bias = tl.zeros((BLOCK_ROWS, BLOCK_N), dtype=tl.float32)
    sum_residual_bias = tl.zeros((BLOCK_ROWS, BLOCK_N), dtype=tl.float32)
    first_row = program.to(tl.int64) * rows_per_program
    end_row = tl.minimum(first_row + rows_per_program, n_rows)
    for block_start in range(first_row, end_row, BLOCK_ROWS):
        rows = block_start + tl.arange(0, BLOCK_ROWS)
        row_valid = rows < end_row
        valid = row_valid[:, None] & col_valid[None, :]
        if DROPOUT:
            s, branch_scale = _load_dropout_sum(x_ptr, residual_ptr, residual_bias_ptr, rows, stride_x_row,
                                                stride_residual_row, cols, col_valid, valid, n_cols, seed,
                                                dropout_p, HAS_RESIDUAL, HAS_RESIDUAL_BIAS)
        else:
            s = _load_sum(x_ptr, residual_ptr, residual_bias_ptr, rows, stride_x_row, stride_residual_row, cols,
                          col_valid, valid, HAS_RESIDUAL, HAS_RESIDUAL_BIAS)
        xhat, g, rstd = layer_norm_rows_grad_inputs(s, rows, row_valid, cols, valid, mean_ptr, rstd_ptr,
                                                    grad_out_ptr, stride_grad_out_row, row_mask_ptr, HAS_ROW_MASK)
        grad_sum = layer_norm_rows_grad_sum(xhat, g, rstd, weight, n_cols)  # zeros outside valid
        offsets = rows[:, None] * n_cols + cols[None, :]
        if STORE_GRAD_SUM:
            tl.store(grad_sum_ptr + offsets, grad_sum.to(grad_sum_ptr.dtype.element_ty), mask=valid)
        sum_weight += g * xhat
        sum_bias += g
        if DROPOUT:  # the dropped branch's gradient: D * ds
            grad_branch = grad_sum * branch_scale
            if STORE_GRAD_BRANCH:
                tl.store(grad_branch_ptr + offsets, grad_branch.to(grad_branch_ptr.dtype.element_ty), mask=valid)
            if RESIDUAL_BIAS_GRAD:
                sum_residual_bias += grad_branch
        elif RESIDUAL_BIAS_GRAD:
            sum_residual_bias += grad_sum
    partial = program.to(tl.int64) * n_cols + cols  # this program's row of the partials
    tl.store(partial_weight_ptr + partial, tl.sum(sum_weight, axis=0), mask=col_valid)
    tl.store(partial_bias_ptr + partial, tl.sum(sum_bias, axis=0), mask=col_valid)
    if RESIDUAL_BIAS_GRAD:
        tl.store(partial_residual_bias_ptr + partial, tl.sum(sum_residual_bias, axis=0), mask=col_valid)


def _num_warps(block_n: int) -> int:
    if interpreting():
        return 1
    return max(1, min(16, block_n // 256))


def _block_rows(n_rows: int, block_n: int) -> int:
    """BLOCK_ROWS, rows per program tile (BLOCK_ROWS, block_n): 1 on a GPU, where one row per
    program (block_n wide, num_warps by width) is the configuration measured so far. The
    interpreter pays milliseconds per program and per op whatever the tile's size, so there a
    program takes up to 8192 // block_n rows (a tile of ~8192 elements), at most n_rows rounded
    up to a power of two."""
    if not interpreting():
        return 1
    return max(1, min(triton.next_power_of_2(max(n_rows, 1)), 8192 // block_n))


def _add_layer_norm_forward(x2d, residual2d, residual_bias, weight, bias, row_mask, eps, seed, dropout_p,
                            store_stats):
    """(out, mean, rstd): out (rows, n_cols) in x's dtype; mean / rstd (rows,) fp32 when
    store_stats, else None. dropout_p > 0 drops residual + residual_bias with mask `seed`."""
    n_rows, n_cols = x2d.shape
    out = torch.empty((n_rows, n_cols), dtype=x2d.dtype, device=x2d.device)
    mean = rstd = None
    if store_stats:
        mean = torch.empty(n_rows, dtype=torch.float32, device=x2d.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x2d.device)
    block_n = triton.next_power_of_2(n_cols)
    block_rows = _block_rows(n_rows, block_n)
    _add_layer_norm_kernel[(triton.cdiv(n_rows, block_rows),)](
        x2d,
        residual2d if residual2d is not None else x2d,
        residual_bias if residual_bias is not None else weight,
        weight,
        bias,
        row_mask if row_mask is not None else weight,
        out,
        mean if store_stats else out,
        rstd if store_stats else out,
        x2d.stride(0),
        residual2d.stride(0) if residual2d is not None else 0,
        n_rows,
        n_cols,
        eps,
        seed,
        dropout_p,
        HAS_RESIDUAL=residual2d is not None,
        HAS_RESIDUAL_BIAS=residual_bias is not None,
        HAS_ROW_MASK=row_mask is not None,
        STORE_STATS=store_stats,
        DROPOUT=dropout_p > 0,
        BLOCK_ROWS=block_rows,
        BLOCK_N=block_n,
        num_warps=_num_warps(block_n),
    )
    return out, mean, rstd


def _backward_programs(device: torch.device, n_rows: int) -> int:
    """Programs of the backward: several per multiprocessor, so that one program's loads
    overlap another's arithmetic (not yet timed on a GPU); 3 under the interpreter."""
    programs = persistent_grid_size(device) if interpreting() else 4 * persistent_grid_size(device)
    return max(1, min(n_rows, programs))


def _add_layer_norm_backward(grad_out2d, x2d, residual2d, residual_bias, weight, row_mask, mean, rstd, seed,
                             dropout_p, store_grad_sum, store_grad_branch, residual_bias_grad):
    """(grad_sum, grad_branch, dweight, dbias, dresidual_bias): grad_sum = ds (rows, n_cols)
    in x's dtype or None unless store_grad_sum; grad_branch = D * ds, residual's gradient
    under dropout, likewise (store_grad_branch needs dropout_p > 0); the column sums in fp32
    (dresidual_bias None unless residual_bias_grad), for the caller to cast."""
    n_rows, n_cols = x2d.shape
    programs = _backward_programs(x2d.device, n_rows)
    grad_sum = torch.empty((n_rows, n_cols), dtype=x2d.dtype, device=x2d.device) if store_grad_sum else None
    grad_branch = torch.empty((n_rows, n_cols), dtype=x2d.dtype, device=x2d.device) if store_grad_branch else None
    partials = torch.zeros((3 if residual_bias_grad else 2, programs, n_cols), dtype=torch.float32,
                           device=x2d.device)
    if n_rows > 0:
        block_n = triton.next_power_of_2(n_cols)
        rows_per_program = triton.cdiv(n_rows, programs)
        _add_layer_norm_backward_kernel[(programs,)](
            grad_out2d,
            x2d,
            residual2d if residual2d is not None else x2d,
            residual_bias if residual_bias is not None else weight,
            weight,
            row_mask if row_mask is not None else weight,
            mean,
            rstd,
            grad_sum if store_grad_sum else x2d,
            grad_branch if store_grad_branch else x2d,
            partials[0],
            partials[1],
            partials[2] if residual_bias_grad else partials[0],
            grad_out2d.stride(0),
            x2d.stride(0),
            residual2d.stride(0) if residual2d is not None else 0,
            n_rows,
            n_cols,
            rows_per_program,
            seed,
            dropout_p,
            HAS_RESIDUAL=residual2d is not None,
            HAS_RESIDUAL_BIAS=residual_bias is not None,
            HAS_ROW_MASK=row_mask is not None,
            STORE_GRAD_SUM=store_grad_sum,
            STORE_GRAD_BRANCH=store_grad_branch,
            RESIDUAL_BIAS_GRAD=residual_bias_grad,
            DROPOUT=dropout_p > 0,
            BLOCK_ROWS=_block_rows(rows_per_program, block_n),
            BLOCK_N=block_n,
            num_warps=_num_warps(block_n),
        )
    sums = partials.sum(dim=1)  # (2 or 3, n_cols): a fixed-order reduction over the programs
    return grad_sum, grad_branch, sums[0], sums[1], sums[2] if residual_bias_grad else None


class _AddLayerNorm(torch.autograd.Function):
    """add_layer_norm on (rows, n_cols) tensors, with its backward."""

    @staticmethod
    def forward(ctx, x2d, residual2d, residual_bias, weight, bias, row_mask, eps, seed, dropout_p):
        out, mean, rstd = _add_layer_norm_forward(x2d, residual2d, residual_bias, weight, bias, row_mask, eps,
                                                  seed, dropout_p, store_stats=True)
        ctx.save_for_backward(x2d, residual2d, residual_bias, weight, row_mask, mean, rstd)
        ctx.dropout = (seed, dropout_p)  # the backward regenerates the mask from these, none is stored
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable
    def backward(ctx, grad_out):
        x2d, residual2d, residual_bias, weight, row_mask, mean, rstd = ctx.saved_tensors
        needs_x, needs_residual, needs_residual_bias, needs_weight, needs_bias = ctx.needs_input_grad[:5]
        dropout = ctx.dropout[1] > 0
        grad_sum, grad_branch, grad_weight, grad_bias, grad_residual_bias = _add_layer_norm_backward(
            _rows(grad_out, x2d.shape[1]), x2d, residual2d, residual_bias, weight, row_mask, mean, rstd, *ctx.dropout,
            store_grad_sum=needs_x or (needs_residual and not dropout),
            store_grad_branch=needs_residual and dropout, residual_bias_grad=needs_residual_bias,
        )
        return (
            grad_sum if needs_x else None,
            # the gradient of a sum is each term's; the dropped term's is D * ds
            (grad_branch if dropout else grad_sum) if needs_residual else None,
            grad_residual_bias.to(residual_bias.dtype) if needs_residual_bias else None,
            grad_weight.to(weight.dtype) if needs_weight else None,
            grad_bias.to(weight.dtype) if needs_bias else None,
            None,  # row_mask: a padding mask, no gradient
            None,  # eps
            None,  # seed
            None,  # dropout_p
        )


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
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """LayerNorm(x + dropout(residual + residual_bias, dropout_p)) * row_mask[..., None],
    computed in fp32.

    x: (..., dim) fp16 / bf16 / fp32: the residual stream, never dropped. residual: same
    shape and dtype as x, or None: the branch added to it (e.g. a sublayer's projection).
    weight, bias: (dim,) LayerNorm parameters. residual_bias: (dim,) or None: the
    branch's bias (e.g. that projection's bias). row_mask: one value per row of x, e.g.
    the (batch, seq) padding mask, or None; it gets no gradient.
    dropout_p: probability in [0, 1) with which inverted dropout zeroes elements of the
    branch residual + residual_bias (kept ones scaled by 1 / (1 - p)), as XLM drops
    out_lin's / lin2's output in training; 0 runs no dropout. When > 0 (residual or
    residual_bias must be given), one seed is drawn per call from torch's CPU generator
    (dropout.philox_seed): torch.manual_seed reproduces the mask, with or without
    gradients, and the backward regenerates it from that seed.
    Returns a new tensor shaped and typed like x, differentiable in x, residual,
    residual_bias, weight and bias.
    """
    dropout_p = check_dropout_p("dropout_p", dropout_p)
    if dropout_p > 0 and residual is None and residual_bias is None:
        raise ValueError("dropout_p > 0 drops residual + residual_bias: give at least one of them")
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

    seed = philox_seed() if dropout_p > 0 else 0  # drawn before the route is chosen: both give one mask
    args = (
        _rows(x, n_cols),
        _rows(residual, n_cols) if residual is not None else None,
        residual_bias.contiguous() if residual_bias is not None else None,
        weight.contiguous(),
        bias.contiguous(),
        mask_flat,
        float(eps),
        seed,
        dropout_p,
    )
    differentiable = (x, residual, residual_bias, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in differentiable):
        out = _AddLayerNorm.apply(*args)
    else:  # inference: no mean / rstd stores, and no autograd.Function call (~4 us of CPU per call)
        out, _, _ = _add_layer_norm_forward(*args, store_stats=False)
    return out.view(x.shape)
