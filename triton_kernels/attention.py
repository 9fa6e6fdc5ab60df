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
"""
import math

import torch
import triton
import triton.language as tl

from ._utils import check_floating, check_same_device, interpreting


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
    MASKED: tl.constexpr,  # tiles may hold masked or nonexistent keys: apply causal/lengths/bounds
    CAUSAL: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
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
    CAUSAL: tl.constexpr,  # lower-triangle mask; key padding is ignored
    HAS_LENGTHS: tl.constexpr,  # key padding given as lengths_ptr (with HAS_KEY_MASK: the mask's
                                # prefix lengths, used to skip tiles only)
    HAS_KEY_MASK: tl.constexpr,  # key padding given as key_mask_ptr
    HAS_HEAD_SCALE: tl.constexpr,  # multiply the output by head_scale_ptr[head]
    ZERO_PADDED_QUERIES: tl.constexpr,  # with lengths: tiles of queries >= length (> 0) write zeros
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
        length, seq_len, scale_log2, masked_score,
        False, CAUSAL, HAS_LENGTHS, HAS_KEY_MASK, UPCAST_OPERANDS, DOT_PRECISION, HEAD_DIM, PAD_D, SPLIT_D, BLOCK_N,
    )
    acc, acc2, l_i, m_i = _attend_key_tiles(  # boundary tiles: masks and bounds checks
        acc, acc2, l_i, m_i, q, q2, k_slice, v_slice, k2_slice, v2_slice,
        key_mask_row, stride_ms, stride_ks, stride_vs, offs_m, offs_d, full_end, kv_end,
        length, seq_len, scale_log2, masked_score,
        True, CAUSAL, HAS_LENGTHS, HAS_KEY_MASK, UPCAST_OPERANDS, DOT_PRECISION, HEAD_DIM, PAD_D, SPLIT_D, BLOCK_N,
    )

    out_rows = out_ptr + batch * stride_ob + head * stride_oh + offs_m.to(tl.int64) * stride_os
    if ZERO_PADDED_QUERIES:  # skipped tiles have l_i == 0 and acc == 0: output 0, not 0 / 0
        scale = 1.0 / tl.where(l_i > 0, l_i, 1.0)
    else:
        scale = 1.0 / l_i
    if HAS_HEAD_SCALE:
        scale = scale * tl.load(head_scale_ptr + head)
    out = acc * scale[:, None]
    tl.store(out_rows[:, None] + offs_d[None, :], out.to(out_ptr.dtype.element_ty),
             mask=m_valid[:, None] & d_valid[None, :])
    if SPLIT_D:
        out2 = acc2 * scale[:, None]
        tl.store(out_rows[:, None] + offs_d2[None, :], out2.to(out_ptr.dtype.element_ty), mask=m_valid[:, None])


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


def _launch_config(head_dim: int, dtype: torch.dtype) -> dict:
    """Tile sizes (BLOCK_N divides BLOCK_M, which the causal split needs): large tiles on
    a GPU (fewer K/V re-reads), small for fp32, whose exact ("ieee") dots run on FMA
    units rather than tensor cores, and under the interpreter (cheap, and multi-tile
    paths get exercised). From the sm_90 compile (bench/sm90_compile_report.py; no GPU
    timing yet), 16-bit 128 x 64 tiles, 3 stages: head_dim 128 with 8 warps uses ~190
    registers, no spills, 128 KB shared memory (4 warps spill); 80 (64 + 16) ~150
    registers, 80 KB; 64 with 4 warps ~230 registers; 40 (padded to 64) with 4 warps
    spilled. fp32 32 x 32 with 8 warps does not spill at head_dim 128, while 64 x 32
    with 4 warps spilled 32 KB per thread."""
    if interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=8, num_stages=2)
    if head_dim in (16, 32, 64):  # padded small head dims need the registers of 8 warps
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
    return dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)


def _flash_attention_forward(q, k, v, lengths, key_padding_mask, key_mask_lengths, causal, head_scale,
                             zero_padded_queries):
    batch, seq_len, n_heads, head_dim = q.shape
    out = torch.empty((batch, seq_len, n_heads, head_dim), dtype=q.dtype, device=q.device)
    config = _launch_config(head_dim, q.dtype)

    if key_padding_mask is not None:  # the mask decides; its prefix lengths let tiles be skipped
        lengths = key_mask_lengths if key_mask_lengths is not None else key_mask_prefix_lengths(key_padding_mask)
    # unused pointer arguments still need a tensor; `out` is never read through them
    lengths_arg = lengths if lengths is not None else out
    if key_padding_mask is not None:
        mask_arg = key_padding_mask.view(torch.uint8) if key_padding_mask.dtype == torch.bool else key_padding_mask
        stride_mb, stride_ms = mask_arg.stride()
    else:
        mask_arg, stride_mb, stride_ms = out, 0, 0
    head_scale_arg = head_scale if head_scale is not None else out

    grid = (triton.cdiv(seq_len, config["BLOCK_M"]), batch * n_heads)
    _flash_attention_forward_kernel[grid](
        q, k, v, out,
        lengths_arg, mask_arg, head_scale_arg,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        stride_mb, stride_ms,
        seq_len, n_heads,
        (1.0 / math.sqrt(head_dim)) * math.log2(math.e),
        torch.finfo(q.dtype).min,
        CAUSAL=causal,
        HAS_LENGTHS=lengths is not None,
        HAS_KEY_MASK=key_padding_mask is not None,
        HAS_HEAD_SCALE=head_scale is not None,
        ZERO_PADDED_QUERIES=zero_padded_queries,
        UPCAST_OPERANDS=interpreting() and q.dtype == torch.bfloat16,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        HEAD_DIM=head_dim,
        **_head_dim_slices(head_dim),
        **config,
    )
    return out.view(batch, seq_len, n_heads * head_dim)


def key_mask_prefix_lengths(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """(batch,) int32: per row of a (batch, seq) key mask, the number of valid (nonzero)
    keys when they are a prefix (keys [0, length) valid, none after, as a tokenizer's
    right padding gives), else -1. Computed on the device: no synchronisation."""
    valid = key_padding_mask != 0
    length = valid.sum(dim=1)
    positions = torch.arange(valid.shape[1], device=valid.device)
    is_prefix = (valid == (positions[None, :] < length[:, None])).all(dim=1)
    return torch.where(is_prefix, length, -1).to(torch.int32)


def split_fused_qkv(qkv: torch.Tensor, n_heads: int):
    """Views q, k, v as (batch, seq, heads, head_dim) slices of a fused projection
    output qkv (batch, seq, 3 * dim) laid out [q | k | v] along the last dim. No copy."""
    if not isinstance(qkv, torch.Tensor) or qkv.dim() != 3:
        raise ValueError(f"qkv must be a (batch, seq, 3 * dim) tensor, got {getattr(qkv, 'shape', qkv)}")
    if qkv.shape[-1] % (3 * n_heads) != 0:
        raise ValueError(f"qkv last dim {qkv.shape[-1]} is not divisible by 3 * n_heads = {3 * n_heads}")
    batch, seq_len, three_dim = qkv.shape
    head_dim = three_dim // (3 * n_heads)
    heads = qkv.view(batch, seq_len, 3, n_heads, head_dim)
    return heads[:, :, 0], heads[:, :, 1], heads[:, :, 2]


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
    """
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
    return _flash_attention_forward(q, k, v, lengths, key_padding_mask, key_mask_lengths, causal, head_scale,
                                    bool(zero_padded_queries))
