"""Flash-style multi-head attention forward with XLM's masking semantics.

One program computes a BLOCK_M tile of queries of one (batch, head) with an online
softmax over BLOCK_N tiles of keys, so no (seq x seq) matrix is ever stored.
q, k and v are (batch, seq, heads, head_dim) views, typically the three slices of one
fused QKV projection output (batch, seq, 3 * dim) (see `split_fused_qkv`): the kernel
takes their strides, nothing is copied. The output is (batch, seq, heads * head_dim),
ready for out_lin.

XLM semantics reproduced exactly:
  * scores are scaled by 1 / sqrt(head_dim);
  * masked scores are set to the dtype's minimum before an fp32 softmax, so a query
    whose keys are ALL masked gets a uniform softmax over every key position: its
    output is the mean of V over all seq positions, padding included (not zeros);
  * causal=True masks the upper triangle only; key padding is then NOT masked;
  * head_scale (one row of head_mask) multiplies each head's probabilities, which is
    the same as scaling that head's context before out_lin.

Key padding comes either as per-row `lengths` (keys [0, length) valid) or as a general
(batch, seq) 0/1 `key_padding_mask`. With lengths, key tiles beyond the length are
skipped, not computed: they would contribute exp(min - max) == 0 exactly. A length of
0 (every key masked) processes all keys, which the uniform softmax needs. A mask's rows
that are prefixes (a tokenizer's right padding) get the same skipping: their lengths
are found on the device (`key_mask_prefix_lengths`), -1 marking rows that are not.

Each program visits its key tiles in two loops: tiles every query may see in full
(below the length, left of the causal diagonal) with no per-score masks or bounds
checks, then the boundary tiles with them, so the common tile costs two dots and the
softmax update only. HEAD_DIM is a compile-time constant, so tile loads are 16 bytes
wide and software-pipelined (cp.async) whatever the head size.

Backward (flash-style: nothing of size seq x seq is stored). With gradients wanted the
forward also stores each query's log-sum-exp of its scaled scores, in log2 units (fp32,
(batch, heads, seq); +inf for the rows that zero_padded_queries skips, so that they get
no probability). With P recomputed tile by tile as exp2(score * scale_log2 - lse),
hs = head_scale[head], O = hs * P @ V the output and dO its gradient:
    delta_i = rowsum(dO * O)_i = sum_j P_ij dP_ij,  dP_ij = hs * dO_i . v_j,
    dS_ij = P_ij (dP_ij - delta_i),  dq_i = sm_scale * sum_j dS_ij k_j,
    dk_j = sm_scale * sum_i dS_ij q_i,  dv_j = hs * sum_i P_ij dO_i,
    d hs = sum over batch rows and queries of dO_i . (P @ V)_i.
One kernel computes delta; one program per key tile accumulates dk, dv over the query
tiles that see it; one per query tile accumulates dq (and the d hs terms) over key
tiles: no atomics, so runs are deterministic. Masked keys get P = 0 and dS = 0. A row
whose keys are all masked has constant uniform probabilities (1 / seq_len on every
key): dS = 0 there (its queries and keys get no gradient), its values get hs * dO / seq_len.

Dropout (dropout_p = p > 0, XLM in training: softmax, then dropout, then head_mask):
probability P_ij of (batch b, head h) is kept where D_ij = keep(seed, ((b * heads + h)
* seq + i) * seq + j, p) (see dropout.py), one seed per call. The normaliser (row max,
l, lse) takes every probability; only P @ V uses P' = D * P / (1 - p), so
O = hs * P' @ V. All-masked rows are dropped too. Nothing is stored: the backward
kernels regenerate D from the seed, with D' = D / (1 - p):
    delta_i = rowsum(dO * O)_i (= sum_j P_ij dP_ij still),  dP_ij = hs * D'_ij dO_i . v_j,
    dS_ij = P_ij (dP_ij - delta_i),  dv_j = hs * sum_i P'_ij dO_i,
    d hs = sum over rows and keys of P'_ij dO_i . v_j;  dq, dk from dS as above.
The DROPOUT constexpr compiles none of this when p = 0.
"""
import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ._utils import check_floating, check_same_device, interpreting
from .dropout import check_dropout_p, philox_seed
from .dropout import keep as dropout_keep


@triton.jit
def _load_tile(ptrs, row_valid, col_valid, CHECK_ROWS: tl.constexpr, CHECK_COLS: tl.constexpr):
    """A (rows, cols) tile, masked only where a constexpr says rows or columns may not
    exist, so that full tiles load 16 bytes at a time with no predicates."""
    if CHECK_ROWS:
        if CHECK_COLS:
            tile = tl.load(ptrs, mask=row_valid[:, None] & col_valid[None, :], other=0.0)
        else:
            tile = tl.load(ptrs, mask=row_valid[:, None], other=0.0)
    elif CHECK_COLS:
        tile = tl.load(ptrs, mask=col_valid[None, :], other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def _attend_key_tiles(
    acc, acc2, l_i, m_i,  # running numerators (BLOCK_M, BLOCK_D) and (BLOCK_M, BLOCK_D2), denominator, max
    q, q2,  # query tile columns [0, BLOCK_D) and [BLOCK_D, BLOCK_D + BLOCK_D2) (q2 used when SPLIT_D)
    k_ptrs, v_ptrs, k2_ptrs, v2_ptrs,  # (BLOCK_N, BLOCK_D / BLOCK_D2) pointers into key / value tile 0
    key_mask_row, stride_ms,  # this batch row's key mask and its seq stride (HAS_KEY_MASK)
    stride_ks, stride_vs,  # k / v seq strides
    offs_m, offs_d,  # (BLOCK_M,) query positions, (BLOCK_D,) head-dim offsets
    start, end,  # key positions [start, end) to visit, start a multiple of BLOCK_N
    length, seq_len, scale_log2, masked_score,
    drop_rows, dropout_seed, dropout_p,  # (BLOCK_M,) int64 dropout offsets of key 0 of each query; seed, p
    MASKED: tl.constexpr,  # tiles may hold masked or nonexistent keys: apply causal/lengths/bounds
    CAUSAL: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr, DROPOUT: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    HEAD_DIM: tl.constexpr, PAD_D: tl.constexpr, SPLIT_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Online-softmax update over key tiles [start, end). Unmasked tiles (MASKED=False)
    skip every bounds check and mask; only a general key mask, which can hole any tile,
    is applied to them."""
    offs_n_tile = tl.arange(0, BLOCK_N)
    d_valid = offs_d < HEAD_DIM
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + offs_n_tile
        n_valid = offs_n < seq_len
        k_shift = tl.cast(start_n, tl.int64) * stride_ks
        v_shift = tl.cast(start_n, tl.int64) * stride_vs
        k = _load_tile(k_ptrs + k_shift, n_valid, d_valid, MASKED, PAD_D)
        p_dtype = k.dtype  # probabilities are rounded to the input dtype before P @ V, as HF
        if UPCAST_OPERANDS:
            k = k.to(tl.float32)
        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
        if SPLIT_D:
            k2 = _load_tile(k2_ptrs + k_shift, n_valid, d_valid, MASKED, False)
            if UPCAST_OPERANDS:
                k2 = k2.to(tl.float32)
            scores = tl.dot(q2, tl.trans(k2), scores, input_precision=DOT_PRECISION)

        if HAS_KEY_MASK:
            key_keep = tl.load(key_mask_row + offs_n.to(tl.int64) * stride_ms, mask=n_valid, other=0)
            scores = tl.where((key_keep != 0)[None, :], scores, masked_score)
        if MASKED:
            if CAUSAL:
                scores = tl.where(offs_n[None, :] <= offs_m[:, None], scores, masked_score)
            if HAS_LENGTHS:
                scores = tl.where((offs_n < length)[None, :], scores, masked_score)
            # positions past seq_len do not exist: they must not even take part uniformly
            scores = tl.where(n_valid[None, :], scores, float("-inf"))

        # scores stay unscaled: the scale rides on the row max and on one FMA per score
        m_new = tl.maximum(m_i, tl.max(scores, axis=1) * scale_log2)
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores * scale_log2 - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:  # the normaliser took every probability; only P @ V sees the mask (1 / (1 - p) at the end)
            p = tl.where(dropout_keep(dropout_seed, drop_rows[:, None] + offs_n[None, :], dropout_p), p, 0.0)
        p_cast = p.to(p_dtype)
        if UPCAST_OPERANDS:
            p_cast = p_cast.to(tl.float32)
        v = _load_tile(v_ptrs + v_shift, n_valid, d_valid, MASKED, PAD_D)
        if UPCAST_OPERANDS:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p_cast, v, input_precision=DOT_PRECISION)
        if SPLIT_D:
            v2 = _load_tile(v2_ptrs + v_shift, n_valid, d_valid, MASKED, False)
            if UPCAST_OPERANDS:
                v2 = v2.to(tl.float32)
            acc2 = acc2 * alpha[:, None] + tl.dot(p_cast, v2, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, acc2, l_i, m_i


@triton.jit
def _flash_attention_forward_kernel(
    q_ptr,  # (batch, seq, heads, head_dim) queries, last dim contiguous
    k_ptr,  # (batch, seq, heads, head_dim) keys, last dim contiguous
    v_ptr,  # (batch, seq, heads, head_dim) values, last dim contiguous
    out_ptr,  # (batch, seq, heads, head_dim) output, contiguous == (batch, seq, dim)
    lse_ptr,  # (batch, heads, seq) fp32 out: log2-domain log-sum-exp of the scaled scores; when STORE_LSE
    lengths_ptr,  # (batch,) int: keys [0, length) are valid (< 0: unknown); read when HAS_LENGTHS
    key_mask_ptr,  # (batch, seq) nonzero = valid key; read when HAS_KEY_MASK
    head_scale_ptr,  # (heads,) fp32 per-head probability scale; read when HAS_HEAD_SCALE
    stride_qb, stride_qs, stride_qh,  # q strides (batch, seq, head) in elements
    stride_kb, stride_ks, stride_kh,  # k strides (batch, seq, head)
    stride_vb, stride_vs, stride_vh,  # v strides (batch, seq, head)
    stride_ob, stride_os, stride_oh,  # out strides (batch, seq, head)
    stride_mb, stride_ms,  # key_mask strides (batch, seq)
    seq_len,  # number of query and key positions
    n_heads,  # heads per batch row
    scale_log2,  # 1 / sqrt(head_dim) * log2(e): takes scores to the exp2 domain
    masked_score,  # the input dtype's minimum, given to every masked (unscaled) score
    dropout_seed,  # int64 Philox seed of the probability dropout mask; read when DROPOUT
    dropout_p,  # probability dropout rate in (0, 1); read when DROPOUT
    CAUSAL: tl.constexpr,  # lower-triangle mask; key padding is ignored
    HAS_LENGTHS: tl.constexpr,  # key padding given as lengths_ptr (with HAS_KEY_MASK: the mask's
                                # prefix lengths, used to skip tiles only)
    HAS_KEY_MASK: tl.constexpr,  # key padding given as key_mask_ptr
    HAS_HEAD_SCALE: tl.constexpr,  # multiply the output by head_scale_ptr[head]
    ZERO_PADDED_QUERIES: tl.constexpr,  # with lengths: tiles of queries >= length (> 0) write zeros
    STORE_LSE: tl.constexpr,  # gradients wanted: store lse_ptr for the backward (inference skips it)
    DROPOUT: tl.constexpr,  # drop probability (b, h, i, j) unless keep(seed, ((b * heads + h) * seq + i) * seq + j)
    UPCAST_OPERANDS: tl.constexpr,  # feed tl.dot fp32 copies (bf16 under the interpreter)
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs (no TF32), "tf32" otherwise
    HEAD_DIM: tl.constexpr,  # true head dimension; a constant so that unpadded loads vectorise
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per inner step; divides BLOCK_M
    BLOCK_D: tl.constexpr,  # head-dim columns [0, BLOCK_D): a power of two >= 16
    PAD_D: tl.constexpr,  # HEAD_DIM < BLOCK_D: columns past HEAD_DIM are masked (zeros)
    SPLIT_D: tl.constexpr,  # HEAD_DIM == BLOCK_D + BLOCK_D2 (80 = 64 + 16): a second column slice
    BLOCK_D2: tl.constexpr,  # width of the second slice (a power of two >= 16; unused without SPLIT_D)
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = (pid_bh // n_heads).to(tl.int64)
    head = (pid_bh % n_heads).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
    d_valid = offs_d < HEAD_DIM
    m_valid = offs_m < seq_len

    q_rows = q_ptr + batch * stride_qb + head * stride_qh + offs_m.to(tl.int64) * stride_qs
    q = _load_tile(q_rows[:, None] + offs_d[None, :], m_valid, d_valid, True, PAD_D)
    q2 = tl.zeros([BLOCK_M, BLOCK_D2], dtype=q.dtype)  # replaced when SPLIT_D, else unused
    if SPLIT_D:
        q2 = _load_tile(q_rows[:, None] + offs_d2[None, :], m_valid, d_valid, True, False)
    if UPCAST_OPERANDS:
        q = q.to(tl.float32)
        q2 = q2.to(tl.float32)

    # (BLOCK_N, columns) pointers to key / value tile 0 of this (batch, head); int64 offsets
    offs_n_tile = tl.arange(0, BLOCK_N).to(tl.int64)
    k_rows = k_ptr + batch * stride_kb + head * stride_kh + offs_n_tile * stride_ks
    v_rows = v_ptr + batch * stride_vb + head * stride_vh + offs_n_tile * stride_vs
    key_mask_row = key_mask_ptr + batch * stride_mb
    drop_rows = (pid_bh.to(tl.int64) * seq_len + offs_m) * seq_len  # dropout offset of key 0 of each query

    # Keys [0, full_end) are valid for every query of this tile (no per-key mask needed
    # but the general key mask); [full_end, kv_end) need masks; keys past kv_end are
    # skipped: masked keys there contribute exp(min - max) == 0 exactly.
    length = seq_len
    kv_end = seq_len
    full_end = (seq_len // BLOCK_N) * BLOCK_N
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + batch).to(tl.int32)
        # negative: the key mask of this row is not a prefix, so no tile can be skipped
        length = tl.where(length >= 0, tl.minimum(length, seq_len), seq_len)
        # a row without valid keys attends uniformly to ALL keys, so it scans them all
        kv_end = tl.where(length > 0, length, seq_len)
        full_end = tl.where(length > 0, (length // BLOCK_N) * BLOCK_N, 0)
        if ZERO_PADDED_QUERIES:  # a tile of padding queries only visits no key: zeros out
            padding_tile = (length > 0) & (pid_m * BLOCK_M >= length)
            kv_end = tl.where(padding_tile, 0, kv_end)
            full_end = tl.where(padding_tile, 0, full_end)
    if CAUSAL:
        kv_end = tl.minimum(seq_len, (pid_m + 1) * BLOCK_M)
        full_end = pid_m * BLOCK_M

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running numerator @ V, columns [0, BLOCK_D)
    acc2 = tl.zeros([BLOCK_M, BLOCK_D2], dtype=tl.float32)  # the same for the second slice
    k_slice, v_slice = k_rows[:, None] + offs_d[None, :], v_rows[:, None] + offs_d[None, :]
    k2_slice, v2_slice = k_rows[:, None] + offs_d2[None, :], v_rows[:, None] + offs_d2[None, :]
    acc, acc2, l_i, m_i = _attend_key_tiles(  # tiles every query sees in full: no masks
        acc, acc2, l_i, m_i, q, q2, k_slice, v_slice, k2_slice, v2_slice,
        key_mask_row, stride_ms, stride_ks, stride_vs, offs_m, offs_d, 0, full_end,
        length, seq_len, scale_log2, masked_score, drop_rows, dropout_seed, dropout_p,
        False, CAUSAL, HAS_LENGTHS, HAS_KEY_MASK, DROPOUT, UPCAST_OPERANDS, DOT_PRECISION, HEAD_DIM, PAD_D, SPLIT_D,
        BLOCK_N,
    )
    acc, acc2, l_i, m_i = _attend_key_tiles(  # boundary tiles: masks and bounds checks
        acc, acc2, l_i, m_i, q, q2, k_slice, v_slice, k2_slice, v2_slice,
        key_mask_row, stride_ms, stride_ks, stride_vs, offs_m, offs_d, full_end, kv_end,
        length, seq_len, scale_log2, masked_score, drop_rows, dropout_seed, dropout_p,
        True, CAUSAL, HAS_LENGTHS, HAS_KEY_MASK, DROPOUT, UPCAST_OPERANDS, DOT_PRECISION, HEAD_DIM, PAD_D, SPLIT_D,
        BLOCK_N,
    )

    out_rows = out_ptr + batch * stride_ob + head * stride_oh + offs_m.to(tl.int64) * stride_os
    if ZERO_PADDED_QUERIES:  # skipped tiles have l_i == 0 and acc == 0: output 0, not 0 / 0
        scale = 1.0 / tl.where(l_i > 0, l_i, 1.0)
    else:
        scale = 1.0 / l_i
    if HAS_HEAD_SCALE:
        scale = scale * tl.load(head_scale_ptr + head)
    if DROPOUT:  # inverted dropout: kept probabilities scaled by 1 / (1 - p)
        scale = scale / (1.0 - dropout_p)
    out = acc * scale[:, None]
    tl.store(out_rows[:, None] + offs_d[None, :], out.to(out_ptr.dtype.element_ty),
             mask=m_valid[:, None] & d_valid[None, :])
    if SPLIT_D:
        out2 = acc2 * scale[:, None]
        tl.store(out_rows[:, None] + offs_d2[None, :], out2.to(out_ptr.dtype.element_ty), mask=m_valid[:, None])
    if STORE_LSE:  # skipped (zero) rows get +inf: the backward's exp2(score - lse) is 0 there
        lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("inf"))
        tl.store(lse_ptr + pid_bh.to(tl.int64) * seq_len + offs_m, lse, mask=m_valid)


@triton.jit
def _load_head_tile(rows, offs_d, offs_d2, row_valid, d_valid,
                    PAD_D: tl.constexpr, SPLIT_D: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
                    ROWS: tl.constexpr, BLOCK_D2: tl.constexpr):
    """Columns [0, BLOCK_D) and, with SPLIT_D, [BLOCK_D, BLOCK_D + BLOCK_D2) of the rows
    `rows` (ROWS,) point to (column 0 of each); zeros for rows that do not exist and for
    the second slice without SPLIT_D."""
    tile = _load_tile(rows[:, None] + offs_d[None, :], row_valid, d_valid, True, PAD_D)
    tile2 = tl.zeros([ROWS, BLOCK_D2], dtype=tile.dtype)
    if SPLIT_D:
        tile2 = _load_tile(rows[:, None] + offs_d2[None, :], row_valid, d_valid, True, False)
    if UPCAST_OPERANDS:
        tile = tile.to(tl.float32)
        tile2 = tile2.to(tl.float32)
    return tile, tile2


@triton.jit
def _store_head_tile(rows, offs_d, offs_d2, row_valid, d_valid, tile, tile2, SPLIT_D: tl.constexpr):
    """Stores the two column slices of _load_head_tile (fp32) in the rows' dtype."""
    tl.store(rows[:, None] + offs_d[None, :], tile.to(rows.dtype.element_ty),
             mask=row_valid[:, None] & d_valid[None, :])
    if SPLIT_D:
        tl.store(rows[:, None] + offs_d2[None, :], tile2.to(rows.dtype.element_ty), mask=row_valid[:, None])


@triton.jit
def _dot_rows(a, a2, b, b2, SPLIT_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """a @ b^T over the head dim, both column slices: (rows of a, rows of b) fp32."""
    product = tl.dot(a, tl.trans(b), input_precision=DOT_PRECISION)
    if SPLIT_D:
        product = tl.dot(a2, tl.trans(b2), product, input_precision=DOT_PRECISION)
    return product


@triton.jit
def _row_key_length(lengths_ptr, batch, seq_len):
    """This batch row's valid key count for the backward, as the forward resolves it: a
    negative length (a key mask that is not a prefix) means no key can be ruled out."""
    length = tl.load(lengths_ptr + batch).to(tl.int32)
    return tl.where(length >= 0, tl.minimum(length, seq_len), seq_len)


@triton.jit
def _attention_backward_delta_kernel(
    out_ptr,  # (batch, seq, heads, head_dim) forward output (head_scale included), last dim contiguous
    grad_out_ptr,  # (batch, seq, heads, head_dim) dL/dout, last dim contiguous
    delta_ptr,  # (batch, heads, seq) fp32 out: rowsum(dout * out) = sum_j P_ij dP_ij
    stride_ob, stride_os, stride_oh,  # out strides (batch, seq, head)
    stride_gb, stride_gs, stride_gh,  # grad_out strides (batch, seq, head)
    seq_len,  # query positions
    n_heads,  # heads per batch row
    HEAD_DIM: tl.constexpr,  # true head dimension
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_DH: tl.constexpr,  # HEAD_DIM padded to a power of two (columns past it masked)
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = (pid_bh // n_heads).to(tl.int64)
    head = (pid_bh % n_heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_DH)
    valid = (offs_m < seq_len)[:, None] & (offs_d < HEAD_DIM)[None, :]
    rows = offs_m.to(tl.int64)[:, None]
    out = tl.load(out_ptr + batch * stride_ob + head * stride_oh + rows * stride_os + offs_d[None, :],
                  mask=valid, other=0.0).to(tl.float32)
    grad_out = tl.load(grad_out_ptr + batch * stride_gb + head * stride_gh + rows * stride_gs + offs_d[None, :],
                       mask=valid, other=0.0).to(tl.float32)
    tl.store(delta_ptr + pid_bh.to(tl.int64) * seq_len + offs_m, tl.sum(out * grad_out, axis=1),
             mask=offs_m < seq_len)


@triton.jit
def _flash_attention_backward_dkdv_kernel(
    q_ptr, k_ptr, v_ptr,  # (batch, seq, heads, head_dim) forward inputs, last dim contiguous
    grad_out_ptr,  # (batch, seq, heads, head_dim) dL/dout, last dim contiguous
    lse_ptr,  # (batch, heads, seq) fp32 forward log-sum-exp (log2 domain; +inf: row got no probability)
    delta_ptr,  # (batch, heads, seq) fp32 rowsum(dout * out)
    dk_ptr, dv_ptr,  # (batch, seq, heads, head_dim) out: dL/dk, dL/dv, last dim contiguous
    lengths_ptr,  # (batch,) int valid key counts (< 0: unknown); read when HAS_LENGTHS
    key_mask_ptr,  # (batch, seq) nonzero = valid key; read when HAS_KEY_MASK
    head_scale_ptr,  # (heads,) fp32 per-head probability scale; read when HAS_HEAD_SCALE
    stride_qb, stride_qs, stride_qh,  # q strides (batch, seq, head)
    stride_kb, stride_ks, stride_kh,  # k strides
    stride_vb, stride_vs, stride_vh,  # v strides
    stride_gb, stride_gs, stride_gh,  # grad_out strides
    stride_dkb, stride_dks, stride_dkh,  # dk strides
    stride_dvb, stride_dvs, stride_dvh,  # dv strides
    stride_mb, stride_ms,  # key_mask strides (batch, seq)
    seq_len,  # query and key positions
    n_heads,  # heads per batch row
    scale_log2,  # 1 / sqrt(head_dim) * log2(e), as in the forward
    sm_scale,  # 1 / sqrt(head_dim): d score / d (q . k)
    zero_tile,  # the forward's queries per program (ZERO_PADDED_QUERIES: which rows it zeroed)
    dropout_seed, dropout_p,  # the forward's dropout seed and rate; read when DROPOUT
    CAUSAL: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    HAS_HEAD_SCALE: tl.constexpr, ZERO_PADDED_QUERIES: tl.constexpr,  # the forward's masking flags
    DROPOUT: tl.constexpr,  # the forward dropped probabilities: regenerate its mask D
    UPCAST_OPERANDS: tl.constexpr, DOT_PRECISION: tl.constexpr,  # as in the forward
    HEAD_DIM: tl.constexpr,  # true head dimension
    BLOCK_M: tl.constexpr,  # queries per inner step
    BLOCK_N: tl.constexpr,  # keys per program
    BLOCK_D: tl.constexpr, PAD_D: tl.constexpr, SPLIT_D: tl.constexpr, BLOCK_D2: tl.constexpr,  # _head_dim_slices
):
    """dk, dv of one BLOCK_N tile of keys of one (batch, head), looping over query tiles:
    dv = hs * sum_i P'_ij dout_i, dk = sm_scale * sum_i dS_ij q_i with
    dS_ij = P_ij (hs * D'_ij dout_i . v_j - delta_i), D' = D / (1 - p) and P' = D' P
    under DROPOUT (D' = 1 without)."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = (pid_bh // n_heads).to(tl.int64)
    head = (pid_bh % n_heads).to(tl.int64)
    io_dtype = q_ptr.dtype.element_ty  # probabilities are rounded to it before their dots, as the forward's
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
    d_valid = offs_d < HEAD_DIM
    n_valid = offs_n < seq_len
    rows_n = offs_n.to(tl.int64)
    k, k2 = _load_head_tile(k_ptr + batch * stride_kb + head * stride_kh + rows_n * stride_ks, offs_d, offs_d2,
                            n_valid, d_valid, PAD_D, SPLIT_D, UPCAST_OPERANDS, BLOCK_N, BLOCK_D2)
    v, v2 = _load_head_tile(v_ptr + batch * stride_vb + head * stride_vh + rows_n * stride_vs, offs_d, offs_d2,
                            n_valid, d_valid, PAD_D, SPLIT_D, UPCAST_OPERANDS, BLOCK_N, BLOCK_D2)
    head_scale = 1.0
    if HAS_HEAD_SCALE:
        head_scale = tl.load(head_scale_ptr + head)
    v_scale = head_scale  # d out / d (P' @ V): hs, and 1 / (1 - p) under DROPOUT
    if DROPOUT:
        v_scale = head_scale / (1.0 - dropout_p)

    # which keys of this tile take probability, and which query tiles can reach them
    key_keep = n_valid
    if HAS_KEY_MASK:
        key_keep &= tl.load(key_mask_ptr + batch * stride_mb + rows_n * stride_ms, mask=n_valid, other=0) != 0
    q_start = 0
    q_end = seq_len
    uniform = False  # every key of the row masked: P = 1 / seq_len everywhere, constant (dS = 0)
    if HAS_LENGTHS:
        length = _row_key_length(lengths_ptr, batch, seq_len)
        uniform = length == 0
        key_keep &= offs_n < length
        q_end = tl.where((length > 0) & (pid_n * BLOCK_N >= length), 0, q_end)  # keys all masked: dk = dv = 0
        if ZERO_PADDED_QUERIES:  # queries of the forward's skipped tiles are constant zeros
            q_end = tl.where(length > 0, tl.minimum(q_end, tl.cdiv(length, zero_tile) * zero_tile), q_end)
    uniform_p = tl.where(n_valid, 1.0 / seq_len, 0.0)
    if CAUSAL:  # query i sees key j <= i only
        q_start = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dk2 = tl.zeros([BLOCK_N, BLOCK_D2], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv2 = tl.zeros([BLOCK_N, BLOCK_D2], dtype=tl.float32)
    q_base = q_ptr + batch * stride_qb + head * stride_qh
    grad_out_base = grad_out_ptr + batch * stride_gb + head * stride_gh
    row_stats = pid_bh.to(tl.int64) * seq_len
    for start_m in range(q_start, q_end, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_valid = offs_m < seq_len
        rows_m = offs_m.to(tl.int64)
        q, q2 = _load_head_tile(q_base + rows_m * stride_qs, offs_d, offs_d2, m_valid, d_valid,
                                PAD_D, SPLIT_D, UPCAST_OPERANDS, BLOCK_M, BLOCK_D2)
        grad_out, grad_out2 = _load_head_tile(grad_out_base + rows_m * stride_gs, offs_d, offs_d2, m_valid, d_valid,
                                              PAD_D, SPLIT_D, UPCAST_OPERANDS, BLOCK_M, BLOCK_D2)
        lse = tl.load(lse_ptr + row_stats + offs_m, mask=m_valid, other=float("inf"))
        delta = tl.load(delta_ptr + row_stats + offs_m, mask=m_valid, other=0.0)
        if HAS_LENGTHS:  # uniform rows take uniform_p below; exp2(score - inf) = 0 keeps the exp2 finite
            lse = tl.where(uniform, float("inf"), lse)

        scores_t = _dot_rows(k, k2, q, q2, SPLIT_D, DOT_PRECISION)  # (BLOCK_N, BLOCK_M) unscaled, transposed
        keep = key_keep[:, None]
        if CAUSAL:
            keep = keep & (offs_n[:, None] <= offs_m[None, :])
        p_t = tl.where(keep, tl.exp2(scores_t * scale_log2 - lse[None, :]), 0.0)
        if HAS_LENGTHS:
            p_t = tl.where(uniform, uniform_p[:, None], p_t)
        p_drop_t = p_t
        if DROPOUT:  # the forward's mask of these (key j, query i): offsets ((b * heads + h) * seq + i) * seq + j
            kept_t = dropout_keep(dropout_seed, (row_stats + rows_m)[None, :] * seq_len + rows_n[:, None], dropout_p)
            p_drop_t = tl.where(kept_t, p_t, 0.0)
        p_cast = p_drop_t.to(io_dtype)
        if UPCAST_OPERANDS:
            p_cast = p_cast.to(tl.float32)
        dv = tl.dot(p_cast, grad_out, dv, input_precision=DOT_PRECISION)
        if SPLIT_D:
            dv2 = tl.dot(p_cast, grad_out2, dv2, input_precision=DOT_PRECISION)

        grad_p_t = _dot_rows(v, v2, grad_out, grad_out2, SPLIT_D, DOT_PRECISION)  # dout . v, head scale not yet in
        if DROPOUT:
            grad_p_t = tl.where(kept_t, grad_p_t, 0.0)
        if HAS_HEAD_SCALE or DROPOUT:
            grad_p_t = grad_p_t * v_scale
        grad_s_t = p_t * (grad_p_t - delta[None, :])
        if HAS_LENGTHS:
            grad_s_t = tl.where(uniform, 0.0, grad_s_t)
        grad_s_cast = grad_s_t.to(io_dtype)
        if UPCAST_OPERANDS:
            grad_s_cast = grad_s_cast.to(tl.float32)
        dk = tl.dot(grad_s_cast, q, dk, input_precision=DOT_PRECISION)
        if SPLIT_D:
            dk2 = tl.dot(grad_s_cast, q2, dk2, input_precision=DOT_PRECISION)

    _store_head_tile(dk_ptr + batch * stride_dkb + head * stride_dkh + rows_n * stride_dks, offs_d, offs_d2,
                     n_valid, d_valid, dk * sm_scale, dk2 * sm_scale, SPLIT_D)
    _store_head_tile(dv_ptr + batch * stride_dvb + head * stride_dvh + rows_n * stride_dvs, offs_d, offs_d2,
                     n_valid, d_valid, dv * v_scale, dv2 * v_scale, SPLIT_D)


@triton.jit
def _flash_attention_backward_dq_kernel(
    q_ptr, k_ptr, v_ptr,  # (batch, seq, heads, head_dim) forward inputs, last dim contiguous
    grad_out_ptr,  # (batch, seq, heads, head_dim) dL/dout, last dim contiguous
    lse_ptr,  # (batch, heads, seq) fp32 forward log-sum-exp (log2 domain; +inf: row got no probability)
    delta_ptr,  # (batch, heads, seq) fp32 rowsum(dout * out)
    dq_ptr,  # (batch, seq, heads, head_dim) out: dL/dq, last dim contiguous; written when COMPUTE_DQ
    head_scale_rows_ptr,  # (batch, heads, seq) fp32 out: dout_i . (P @ V)_i; written when HEAD_SCALE_GRAD
    lengths_ptr,  # (batch,) int valid key counts (< 0: unknown); read when HAS_LENGTHS
    key_mask_ptr,  # (batch, seq) nonzero = valid key; read when HAS_KEY_MASK
    head_scale_ptr,  # (heads,) fp32 per-head probability scale; read when HAS_HEAD_SCALE
    stride_qb, stride_qs, stride_qh,  # q strides (batch, seq, head)
    stride_kb, stride_ks, stride_kh,  # k strides
    stride_vb, stride_vs, stride_vh,  # v strides
    stride_gb, stride_gs, stride_gh,  # grad_out strides
    stride_dqb, stride_dqs, stride_dqh,  # dq strides
    stride_mb, stride_ms,  # key_mask strides (batch, seq)
    seq_len,  # query and key positions
    n_heads,  # heads per batch row
    scale_log2,  # 1 / sqrt(head_dim) * log2(e), as in the forward
    sm_scale,  # 1 / sqrt(head_dim): d score / d (q . k)
    zero_tile,  # the forward's queries per program (ZERO_PADDED_QUERIES: which rows it zeroed)
    dropout_seed, dropout_p,  # the forward's dropout seed and rate; read when DROPOUT
    CAUSAL: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    HAS_HEAD_SCALE: tl.constexpr, ZERO_PADDED_QUERIES: tl.constexpr,  # the forward's masking flags
    DROPOUT: tl.constexpr,  # the forward dropped probabilities: regenerate its mask D
    COMPUTE_DQ: tl.constexpr,  # q wants its gradient
    HEAD_SCALE_GRAD: tl.constexpr,  # head_scale wants its gradient
    UPCAST_OPERANDS: tl.constexpr, DOT_PRECISION: tl.constexpr,  # as in the forward
    HEAD_DIM: tl.constexpr,  # true head dimension
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per inner step
    BLOCK_D: tl.constexpr, PAD_D: tl.constexpr, SPLIT_D: tl.constexpr, BLOCK_D2: tl.constexpr,  # _head_dim_slices
):
    """dq of one BLOCK_M tile of queries of one (batch, head), looping over key tiles:
    dq_i = sm_scale * sum_j dS_ij k_j; and the per-query terms of d head_scale,
    sum_j P'_ij dout_i . v_j (P' = D P / (1 - p) under DROPOUT, else P)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = (pid_bh // n_heads).to(tl.int64)
    head = (pid_bh % n_heads).to(tl.int64)
    io_dtype = q_ptr.dtype.element_ty
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
    d_valid = offs_d < HEAD_DIM
    m_valid = offs_m < seq_len
    rows_m = offs_m.to(tl.int64)
    q, q2 = _load_head_tile(q_ptr + batch * stride_qb + head * stride_qh + rows_m * stride_qs, offs_d, offs_d2,
                            m_valid, d_valid, PAD_D, SPLIT_D, UPCAST_OPERANDS, BLOCK_M, BLOCK_D2)
    grad_out, grad_out2 = _load_head_tile(grad_out_ptr + batch * stride_gb + head * stride_gh + rows_m * stride_gs,
                                          offs_d, offs_d2, m_valid, d_valid, PAD_D, SPLIT_D, UPCAST_OPERANDS,
                                          BLOCK_M, BLOCK_D2)
    row_stats = pid_bh.to(tl.int64) * seq_len
    lse = tl.load(lse_ptr + row_stats + offs_m, mask=m_valid, other=float("inf"))
    delta = tl.load(delta_ptr + row_stats + offs_m, mask=m_valid, other=0.0)
    head_scale = 1.0
    if HAS_HEAD_SCALE:
        head_scale = tl.load(head_scale_ptr + head)
    drop_rows = (row_stats + rows_m) * seq_len  # dropout offset of key 0 of each query, as in the forward
    if DROPOUT:
        keep_scale = 1.0 / (1.0 - dropout_p)

    # the key tiles these queries took probability from, as in the forward
    length = seq_len
    kv_end = seq_len
    uniform = False  # every key of the row masked: P = 1 / seq_len everywhere, constant (dS = 0)
    if HAS_LENGTHS:
        length = _row_key_length(lengths_ptr, batch, seq_len)
        uniform = length == 0
        kv_end = tl.where(uniform, seq_len, length)
        lse = tl.where(uniform, float("inf"), lse)  # uniform rows take 1 / seq_len below; keeps the exp2 finite
        if ZERO_PADDED_QUERIES:  # queries of the forward's skipped tiles are constant zeros
            zeroed = (length > 0) & (pid_m * BLOCK_M >= tl.cdiv(length, zero_tile) * zero_tile)
            kv_end = tl.where(zeroed, 0, kv_end)
    if CAUSAL:
        kv_end = tl.minimum(seq_len, (pid_m + 1) * BLOCK_M)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq2 = tl.zeros([BLOCK_M, BLOCK_D2], dtype=tl.float32)
    head_scale_rows = tl.zeros([BLOCK_M], dtype=tl.float32)
    k_base = k_ptr + batch * stride_kb + head * stride_kh
    v_base = v_ptr + batch * stride_vb + head * stride_vh
    for start_n in range(0, kv_end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < seq_len
        rows_n = offs_n.to(tl.int64)
        k, k2 = _load_head_tile(k_base + rows_n * stride_ks, offs_d, offs_d2, n_valid, d_valid,
                                PAD_D, SPLIT_D, UPCAST_OPERANDS, BLOCK_N, BLOCK_D2)
        v, v2 = _load_head_tile(v_base + rows_n * stride_vs, offs_d, offs_d2, n_valid, d_valid,
                                PAD_D, SPLIT_D, UPCAST_OPERANDS, BLOCK_N, BLOCK_D2)
        key_keep = n_valid
        if HAS_KEY_MASK:
            key_keep &= tl.load(key_mask_ptr + batch * stride_mb + rows_n * stride_ms, mask=n_valid, other=0) != 0
        if HAS_LENGTHS:
            key_keep &= offs_n < length
        keep = key_keep[None, :]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])

        scores = _dot_rows(q, q2, k, k2, SPLIT_D, DOT_PRECISION)  # (BLOCK_M, BLOCK_N) unscaled
        p = tl.where(keep, tl.exp2(scores * scale_log2 - lse[:, None]), 0.0)
        if HAS_LENGTHS:
            p = tl.where(uniform, tl.where(n_valid, 1.0 / seq_len, 0.0)[None, :], p)
        grad_p = _dot_rows(grad_out, grad_out2, v, v2, SPLIT_D, DOT_PRECISION)  # dout . v, head scale not yet in
        if DROPOUT:  # D_ij / (1 - p) of the forward's mask
            grad_p = tl.where(dropout_keep(dropout_seed, drop_rows[:, None] + rows_n[None, :], dropout_p),
                              grad_p * keep_scale, 0.0)
        if HEAD_SCALE_GRAD:
            head_scale_rows += tl.sum(p * grad_p, axis=1)
        if COMPUTE_DQ:
            if HAS_HEAD_SCALE:
                grad_p = grad_p * head_scale
            grad_s = p * (grad_p - delta[:, None])
            if HAS_LENGTHS:
                grad_s = tl.where(uniform, 0.0, grad_s)
            grad_s_cast = grad_s.to(io_dtype)
            if UPCAST_OPERANDS:
                grad_s_cast = grad_s_cast.to(tl.float32)
            dq = tl.dot(grad_s_cast, k, dq, input_precision=DOT_PRECISION)
            if SPLIT_D:
                dq2 = tl.dot(grad_s_cast, k2, dq2, input_precision=DOT_PRECISION)

    if COMPUTE_DQ:
        _store_head_tile(dq_ptr + batch * stride_dqb + head * stride_dqh + rows_m * stride_dqs, offs_d, offs_d2,
                         m_valid, d_valid, dq * sm_scale, dq2 * sm_scale, SPLIT_D)
    if HEAD_SCALE_GRAD:
        tl.store(head_scale_rows_ptr + row_stats + offs_m, head_scale_rows, mask=m_valid)


def _head_dim_slices(head_dim: int) -> dict:
    """How the kernel covers head_dim with power-of-two column slices (tl.dot needs
    K >= 16): one slice when head_dim is a power of two; two when the rest is one too
    (80 = 64 + 16, 96 = 64 + 32), so no tensor-core work is spent on padding (80
    padded to 128 would be 60% useful); otherwise one slice with masked columns."""
    if head_dim <= 16:
        return dict(BLOCK_D=16, PAD_D=head_dim != 16, SPLIT_D=False, BLOCK_D2=16)
    first = 1 << (head_dim.bit_length() - 1)
    rest = head_dim - first
    if rest == 0:
        return dict(BLOCK_D=first, PAD_D=False, SPLIT_D=False, BLOCK_D2=16)
    if rest >= 16 and rest & (rest - 1) == 0:
        return dict(BLOCK_D=first, PAD_D=False, SPLIT_D=True, BLOCK_D2=rest)
    return dict(BLOCK_D=triton.next_power_of_2(head_dim), PAD_D=True, SPLIT_D=False, BLOCK_D2=16)


def _launch_config(head_dim: int, dtype: torch.dtype, dropout: bool = False) -> dict:
    """Forward tile sizes (BLOCK_N divides BLOCK_M, which the causal split needs): large
    tiles on a GPU (fewer K/V re-reads), small for fp32, whose exact ("ieee") dots run on
    FMA units rather than tensor cores, and under the interpreter (cheap, and multi-tile
    paths get exercised). `dropout`: the kernel draws a Philox number per score, whose
    rounds hold registers per score of the (BLOCK_M, BLOCK_N) tile, so the 16-bit key
    step halves to 32. From the sm_90a compile (bench/sm90_compile_report.py; no GPU
    timing yet), registers over the causal / lengths / key-mask, head-scale and
    lse-or-not variants, none spilling:
      16-bit 128 x 64, 3 stages: head_dim 128 with 8 warps 175-240, 128 KB shared
        memory; 80 (64 + 16) 125-230, 80 KB; 64 with 4 warps 220-254, 64 KB (40,
        padded to 64, needs 8 warps);
      16-bit with dropout, 128 x 32, 8 warps, 3 stages: 128 175-245, 80 KB; 80 165-180;
        64 130 (128 x 64 took 255 and spilled 28-36 B at 128, 12 B at 80, 676 B at 64);
      fp32 32 x 16, 8 warps, 2 stages: 65-92 at head_dim 64 to 128, 34 KB at 128 (32 x 32
        took 255 at 112 and 128 and spilled up to 836 B there); 4 warps where head_dim
        is split (80, 96): triton 3.6 (the GPU image's) holds 8 warps with 2 stages to
        80 registers and spilled 4-8 B there; with 4 warps, forward and dq take 96-160
        registers with 3.6, up to 255 (no spill) with 3.9."""
    if interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_M=32, BLOCK_N=16, num_warps=4 if _head_dim_slices(head_dim)["SPLIT_D"] else 8,
                    num_stages=2)
    if dropout:
        return dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=3)
    if head_dim in (16, 32, 64):  # padded small head dims need the registers of 8 warps
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
    return dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)


def _backward_launch_config(head_dim: int, dtype: torch.dtype, dropout: bool = False) -> dict:
    """Tile sizes of the two backward kernels: `dkdv` (BLOCK_N keys per program, BLOCK_M
    queries per step) and `dq` (BLOCK_M queries per program, BLOCK_N keys per step).
    The backward holds more tiles live than the forward (k, v, dk, dv or q, dout, dq), so
    its tiles are smaller; `dropout` (a Philox number per score) halves the 16-bit step.
    Under the interpreter the two sizes differ, so that causal tiles that do not line up
    with the diagonal get exercised. From the sm_90a compile (bench/sm90_compile_report.py;
    no GPU timing yet), registers over the training mask variants, none spilling:
      16-bit 64 x 64, 8 warps, 2 stages: head_dim 128 dkdv 205-237, dq 135-191, 96 KB
        shared memory; 80 (64 + 16) 180-211 / 124-174, 60 KB;
      16-bit with dropout, steps of 32 (dkdv 64 keys x 32 queries, dq 64 queries x 32
        keys): 128 dkdv 195-223, dq 164-221, 66 KB; 80 168-178 / 139-175 (64 x 64 took
        255 at 128 and spilled 32 B in dkdv, 4 B in dq, with causal);
      fp32, 8 warps, 2 stages: dkdv 32 keys x 16 queries 72-106; dq 32 x 16 70-88 up to
        head_dim 80, 16 x 16 above, 60-72 at 128 (32-wide steps spilled 8 B with dropout,
        dkdv at 80, dq at 128); dq with 4 warps where head_dim is split (80, 96), as the
        forward (triton 3.6 spilled 16 B at 80 with 8)."""
    if interpreting():
        return dict(dkdv=dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1),
                    dq=dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, num_stages=1))
    if dtype == torch.float32:
        return dict(dkdv=dict(BLOCK_M=16, BLOCK_N=32, num_warps=8, num_stages=2),
                    dq=dict(BLOCK_M=16 if head_dim > 80 else 32, BLOCK_N=16,
                            num_warps=4 if _head_dim_slices(head_dim)["SPLIT_D"] else 8, num_stages=2))
    tiles = dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)
    if dropout:
        return dict(dkdv=dict(tiles, BLOCK_M=32), dq=dict(tiles, BLOCK_N=32))
    return dict(dkdv=tiles, dq=tiles)


def _mask_kernel_args(lengths, key_mask, head_scale, placeholder):
    """Pointer arguments for the optional masks (a placeholder tensor, never read, where
    one is absent) and the key mask's (batch, seq) strides."""
    stride_mb, stride_ms = key_mask.stride() if key_mask is not None else (0, 0)
    return (lengths if lengths is not None else placeholder, key_mask if key_mask is not None else placeholder,
            head_scale if head_scale is not None else placeholder, stride_mb, stride_ms)


def _flash_attention_forward(q, k, v, head_scale, lengths, key_mask, causal, zero_padded_queries, seed, dropout_p,
                             store_lse):
    """(out (batch, seq, heads * head_dim), lse (batch, heads, seq) fp32 or None).
    lengths: the valid key counts, or with key_mask (a kernel-readable (batch, seq)
    mask) its prefix lengths. dropout_p > 0: probabilities dropped with the mask of
    `seed` (dropout.keep_mask(seed, (batch, heads, seq, seq), dropout_p))."""
    batch, seq_len, n_heads, head_dim = q.shape
    out = torch.empty((batch, seq_len, n_heads * head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, n_heads, seq_len), dtype=torch.float32, device=q.device) if store_lse else None
    config = _launch_config(head_dim, q.dtype, dropout=dropout_p > 0)
    lengths_arg, mask_arg, head_scale_arg, stride_mb, stride_ms = _mask_kernel_args(lengths, key_mask, head_scale, out)

    grid = (triton.cdiv(seq_len, config["BLOCK_M"]), batch * n_heads)
    _flash_attention_forward_kernel[grid](
        q, k, v, out,
        lse if store_lse else out,
        lengths_arg, mask_arg, head_scale_arg,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), head_dim,  # out viewed as (batch, seq, heads, head_dim)
        stride_mb, stride_ms,
        seq_len, n_heads,
        (1.0 / math.sqrt(head_dim)) * math.log2(math.e),
        torch.finfo(q.dtype).min,
        seed, dropout_p,
        CAUSAL=causal,
        HAS_LENGTHS=lengths is not None,
        HAS_KEY_MASK=key_mask is not None,
        HAS_HEAD_SCALE=head_scale is not None,
        ZERO_PADDED_QUERIES=zero_padded_queries,
        STORE_LSE=store_lse,
        DROPOUT=dropout_p > 0,
        UPCAST_OPERANDS=interpreting() and q.dtype == torch.bfloat16,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        HEAD_DIM=head_dim,
        **_head_dim_slices(head_dim),
        **config,
    )
    return out, lse


def _flash_attention_backward(grad_out, q, k, v, head_scale, out, lse, lengths, key_mask, causal,
                              zero_padded_queries, seed, dropout_p, zero_tile, needs_q, needs_kv, needs_head_scale):
    """(dq, dk, dv, d head_scale): dq / dk / dv (batch, seq, heads, head_dim) in q's dtype
    (None unless needs_q / needs_kv), d head_scale (heads,) fp32 (None unless
    needs_head_scale). zero_tile: the forward's queries per program; seed, dropout_p:
    the forward's, whose mask the kernels regenerate."""
    batch, seq_len, n_heads, head_dim = q.shape
    grad_out = grad_out.reshape(batch, seq_len, n_heads, head_dim)
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    out = out.view(batch, seq_len, n_heads, head_dim)
    delta = torch.empty((batch, n_heads, seq_len), dtype=torch.float32, device=q.device)
    block_m = 16 if interpreting() else 64
    _attention_backward_delta_kernel[(triton.cdiv(seq_len, block_m), batch * n_heads)](
        out, grad_out, delta,
        out.stride(0), out.stride(1), out.stride(2),
        grad_out.stride(0), grad_out.stride(1), grad_out.stride(2),
        seq_len, n_heads,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_DH=triton.next_power_of_2(head_dim),
    )

    lengths_arg, mask_arg, head_scale_arg, stride_mb, stride_ms = _mask_kernel_args(lengths, key_mask, head_scale,
                                                                                   delta)
    config = _backward_launch_config(head_dim, q.dtype, dropout=dropout_p > 0)
    shared = dict(  # the forward's constexprs
        CAUSAL=causal,
        HAS_LENGTHS=lengths is not None,
        HAS_KEY_MASK=key_mask is not None,
        HAS_HEAD_SCALE=head_scale is not None,
        ZERO_PADDED_QUERIES=zero_padded_queries,
        DROPOUT=dropout_p > 0,
        UPCAST_OPERANDS=interpreting() and q.dtype == torch.bfloat16,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        HEAD_DIM=head_dim,
        **_head_dim_slices(head_dim),
    )
    scales = ((1.0 / math.sqrt(head_dim)) * math.log2(math.e), 1.0 / math.sqrt(head_dim), zero_tile, seed, dropout_p)
    dq = dk = dv = grad_head_scale = None
    if needs_kv:
        dk = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dv = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        grid = (triton.cdiv(seq_len, config["dkdv"]["BLOCK_N"]), batch * n_heads)
        _flash_attention_backward_dkdv_kernel[grid](
            q, k, v, grad_out, lse, delta, dk, dv,
            lengths_arg, mask_arg, head_scale_arg,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            grad_out.stride(0), grad_out.stride(1), grad_out.stride(2),
            dk.stride(0), dk.stride(1), dk.stride(2),
            dv.stride(0), dv.stride(1), dv.stride(2),
            stride_mb, stride_ms,
            seq_len, n_heads, *scales,
            **shared, **config["dkdv"],
        )
    if needs_q or needs_head_scale:
        if needs_q:
            dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        head_scale_rows = torch.empty_like(delta) if needs_head_scale else None
        grid = (triton.cdiv(seq_len, config["dq"]["BLOCK_M"]), batch * n_heads)
        _flash_attention_backward_dq_kernel[grid](
            q, k, v, grad_out, lse, delta,
            dq if needs_q else delta,
            head_scale_rows if needs_head_scale else delta,
            lengths_arg, mask_arg, head_scale_arg,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            grad_out.stride(0), grad_out.stride(1), grad_out.stride(2),
            *(dq.stride()[:3] if needs_q else (0, 0, 0)),
            stride_mb, stride_ms,
            seq_len, n_heads, *scales,
            COMPUTE_DQ=needs_q, HEAD_SCALE_GRAD=needs_head_scale,
            **shared, **config["dq"],
        )
        if needs_head_scale:  # d head_scale[h] = sum over batch rows and queries: a fixed-order reduction
            grad_head_scale = head_scale_rows.sum(dim=(0, 2))
    return dq, dk, dv, grad_head_scale


class _FlashAttention(torch.autograd.Function):
    """flash_attention with its backward; saves q, k, v, the output and the log-sum-exp
    (plus the small mask tensors and the dropout seed), no (seq x seq) matrix."""

    @staticmethod
    def forward(ctx, q, k, v, head_scale, lengths, key_mask, causal, zero_padded_queries, seed, dropout_p):
        out, lse = _flash_attention_forward(q, k, v, head_scale, lengths, key_mask, causal, zero_padded_queries,
                                            seed, dropout_p, store_lse=True)
        ctx.save_for_backward(q, k, v, head_scale, out, lse, lengths, key_mask)
        ctx.causal, ctx.zero_padded_queries = causal, zero_padded_queries
        ctx.seed, ctx.dropout_p = seed, dropout_p  # the backward regenerates the mask from them
        ctx.zero_tile = _launch_config(q.shape[-1], q.dtype, dropout=dropout_p > 0)["BLOCK_M"]  # forward query tile
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable
    def backward(ctx, grad_out):
        q, k, v, head_scale, out, lse, lengths, key_mask = ctx.saved_tensors
        needs_q, needs_k, needs_v, needs_head_scale = ctx.needs_input_grad[:4]
        dq, dk, dv, grad_head_scale = _flash_attention_backward(
            grad_out, q, k, v, head_scale, out, lse, lengths, key_mask, ctx.causal, ctx.zero_padded_queries,
            ctx.seed, ctx.dropout_p, ctx.zero_tile, needs_q, needs_k or needs_v, needs_head_scale,
        )
        return (dq, dk if needs_k else None, dv if needs_v else None, grad_head_scale,
                None, None, None, None, None, None)  # lengths, key_mask, causal, zero_padded_queries, seed, p


def key_mask_prefix_lengths(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """(batch,) int32: per row of a (batch, seq) key mask, the number of valid (nonzero)
    keys when they are a prefix (keys [0, length) valid, none after, as a tokenizer's
    right padding gives), else -1. Computed on the device: no synchronisation."""
    valid = key_padding_mask != 0
    length = valid.sum(dim=1)
    positions = torch.arange(valid.shape[1], device=valid.device)
    is_prefix = (valid == (positions[None, :] < length[:, None])).all(dim=1)
    return torch.where(is_prefix, length, -1).to(torch.int32)


def _qkv_views(qkv, n_heads):
    batch, seq_len, three_dim = qkv.shape
    heads = qkv.view(batch, seq_len, 3, n_heads, three_dim // (3 * n_heads))
    return heads[:, :, 0], heads[:, :, 1], heads[:, :, 2]


class _SplitFusedQKV(torch.autograd.Function):
    """The views of split_fused_qkv with one gradient buffer: each view's own backward
    (select) would fill a zero buffer of qkv's size for each of dq, dk, dv and add the
    three; this one stacks them, (batch, seq, 3, heads, head_dim) -> (batch, seq, 3 * dim)."""

    @staticmethod
    def forward(ctx, qkv, n_heads):
        return _qkv_views(qkv, n_heads)

    @staticmethod
    def backward(ctx, grad_q, grad_k, grad_v):  # an unused view's gradient comes as zeros
        return torch.stack((grad_q, grad_k, grad_v), dim=2).flatten(2), None


def split_fused_qkv(qkv: torch.Tensor, n_heads: int):
    """Views q, k, v as (batch, seq, heads, head_dim) slices of a fused projection
    output qkv (batch, seq, 3 * dim) laid out [q | k | v] along the last dim. No copy;
    with gradients, the views may not be modified in place (one autograd Function
    returns the three)."""
    if not isinstance(qkv, torch.Tensor) or qkv.dim() != 3:
        raise ValueError(f"qkv must be a (batch, seq, 3 * dim) tensor, got {getattr(qkv, 'shape', qkv)}")
    if qkv.shape[-1] % (3 * n_heads) != 0:
        raise ValueError(f"qkv last dim {qkv.shape[-1]} is not divisible by 3 * n_heads = {3 * n_heads}")
    if torch.is_grad_enabled() and qkv.requires_grad:
        return _SplitFusedQKV.apply(qkv, n_heads)
    return _qkv_views(qkv, n_heads)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    lengths: torch.Tensor = None,
    key_padding_mask: torch.Tensor = None,
    causal: bool = False,
    head_scale: torch.Tensor = None,
    zero_padded_queries: bool = False,
    key_mask_lengths: torch.Tensor = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """XLM multi-head attention forward; returns the context (batch, seq, heads * head_dim).

    q, k, v: (batch, seq, heads, head_dim) in fp16 / bf16 / fp32, last dim contiguous
      (any other strides, e.g. views from `split_fused_qkv`).
    lengths: (batch,) integer; keys [0, length) are valid. Or
    key_padding_mask: (batch, seq), nonzero = valid key; rows where it is a prefix
      skip tiles as lengths do. At most one of the two, and neither with causal=True
      (XLM's causal mask ignores key padding).
    key_mask_lengths: key_mask_prefix_lengths(key_padding_mask), when the caller has it
      already (XLMModel computes it once per forward); computed here when None.
    head_scale: (heads,) multiplies each head's attention probabilities (head_mask[layer]).
    Rows whose keys are all masked get the mean of V over all keys, as in XLM.
    zero_padded_queries (needs lengths or key_padding_mask): query tiles lying wholly at
      or past their row's length (> 0; the mask's prefix length) are not computed and
      come out as zeros, for callers that discard padding rows: XLMModel multiplies
      them by the padding mask after every layer, and padding keys are masked, so
      nothing it returns changes. Other rows are exact.
    dropout_p: in [0, 1); > 0 drops attention probabilities after the softmax (XLM's
      training-mode dropout, kept ones scaled by 1 / (1 - p), all-masked rows too) with
      one seed per call drawn by dropout.philox_seed from torch's CPU generator (so
      torch.manual_seed reproduces it, with or without gradients); the backward
      regenerates the mask. 0 runs the kernels without dropout.
    """
    dropout_p = check_dropout_p("dropout_p", dropout_p)
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        check_floating(name, tensor)
        if tensor.dim() != 4:
            raise ValueError(f"{name} must be (batch, seq, heads, head_dim), got shape {tuple(tensor.shape)}")
        if tensor.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last (head_dim) dimension")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must have one shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    batch, seq_len, n_heads, head_dim = q.shape
    if head_dim > 256:
        raise ValueError(f"head_dim must be at most 256, got {head_dim}")
    if lengths is not None and key_padding_mask is not None:
        raise ValueError("give key padding as lengths or as key_padding_mask, not both")
    if zero_padded_queries and lengths is None and key_padding_mask is None:
        raise ValueError("zero_padded_queries=True needs lengths or key_padding_mask")
    if key_mask_lengths is not None and (key_padding_mask is None or key_mask_lengths.shape != (batch,)):
        raise ValueError(f"key_mask_lengths needs key_padding_mask and shape ({batch},)")
    if causal and (lengths is not None or key_padding_mask is not None):
        raise ValueError("causal=True ignores key padding in XLM; pass neither lengths nor key_padding_mask")
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point or lengths.shape != (batch,):
            raise ValueError(
                f"lengths must be an integer tensor of shape ({batch},), got {getattr(lengths, 'shape', lengths)}"
            )
        lengths = lengths.contiguous()
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.shape != (batch, seq_len):
            raise ValueError(
                f"key_padding_mask must be a tensor of shape ({batch}, {seq_len}), "
                f"got {getattr(key_padding_mask, 'shape', key_padding_mask)}"
            )
    if head_scale is not None:
        if not isinstance(head_scale, torch.Tensor) or head_scale.numel() != n_heads:
            raise ValueError(f"head_scale must be a tensor with {n_heads} values (one per head)")
        head_scale = head_scale.reshape(n_heads).to(torch.float32).contiguous()
    check_same_device(q=q, k=k, v=v, lengths=lengths, key_padding_mask=key_padding_mask,
                      key_mask_lengths=key_mask_lengths, head_scale=head_scale)
    key_mask = None
    if key_padding_mask is not None:  # the mask decides; its prefix lengths let tiles be skipped
        lengths = key_mask_lengths if key_mask_lengths is not None else key_mask_prefix_lengths(key_padding_mask)
        key_mask = key_padding_mask.view(torch.uint8) if key_padding_mask.dtype == torch.bool else key_padding_mask
    seed = philox_seed() if dropout_p > 0 else 0  # drawn before the route is chosen: both give the same mask
    args = (q, k, v, head_scale, lengths, key_mask, bool(causal), bool(zero_padded_queries), seed, dropout_p)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, head_scale)):
        return _FlashAttention.apply(*args)
    # inference: no log-sum-exp store, and no autograd.Function call (~4 us of CPU per call)
    out, _ = _flash_attention_forward(*args, store_lse=False)
    return out
