"""XLM input embeddings in one kernel: gathers, sum, LayerNorm and padding mask.

    y = LN_emb(word_emb[ids] + pos_emb[position] (+ lang_emb[langs])
               (+ word_emb[token_type_ids])) * mask[..., None]

One program handles one token: it gathers the rows, sums them in fp32 (HF sums in the
model dtype), normalises and multiplies by that token's padding-mask value.
`inputs_embeds` can replace the word-embedding gather. Token type ids go through the
WORD embeddings, as in XLM.

Index values are not range-checked here (that would need a device sync per call); the
model validates ids, langs and positions before calling.
"""
import torch
import triton
import triton.language as tl

from ._utils import check_floating, check_same_device, interpreting, row_mask_for_kernel
from .layer_norm import normalize_row


@triton.jit
def _embedding_layer_norm_kernel(
    ids_ptr,  # (batch, seq) int word ids; read when not HAS_INPUTS_EMBEDS
    inputs_embeds_ptr,  # (batch, seq, dim) given word vectors; read when HAS_INPUTS_EMBEDS
    position_ids_ptr,  # (batch or 1, seq) int positions; read when HAS_POSITION_IDS, else pos = seq index
    langs_ptr,  # (batch, seq) int language ids; read when HAS_LANGS
    token_type_ids_ptr,  # (batch, seq) int ids looked up in the WORD table; read when HAS_TOKEN_TYPES
    word_ptr,  # (vocab, dim) word embedding table
    position_table_ptr,  # (max_positions, dim) position embedding table
    lang_table_ptr,  # (n_langs, dim) language embedding table
    ln_weight_ptr,  # (dim,) LayerNorm gain
    ln_bias_ptr,  # (dim,) LayerNorm bias
    row_mask_ptr,  # (batch * seq,) padding mask; read when HAS_ROW_MASK
    out_ptr,  # (batch * seq, dim) output, contiguous
    stride_ids_b, stride_ids_s,  # ids strides
    stride_emb_b, stride_emb_s,  # inputs_embeds strides (last dim contiguous)
    stride_pos_b, stride_pos_s,  # position_ids strides (stride_pos_b may be 0: broadcast)
    stride_lang_b, stride_lang_s,  # langs strides
    stride_tt_b, stride_tt_s,  # token_type_ids strides
    stride_word_row, stride_position_row, stride_lang_row,  # table row strides
    seq_len,  # tokens per batch row
    dim,  # hidden size
    eps,  # LayerNorm epsilon
    HAS_INPUTS_EMBEDS: tl.constexpr,
    HAS_POSITION_IDS: tl.constexpr,
    HAS_LANGS: tl.constexpr,
    HAS_TOKEN_TYPES: tl.constexpr,
    HAS_ROW_MASK: tl.constexpr,
    BLOCK_D: tl.constexpr,  # dim padded to a power of two
):
    token = tl.program_id(0).to(tl.int64)
    batch = token // seq_len
    pos_in_seq = token % seq_len
    cols = tl.arange(0, BLOCK_D)
    col_valid = cols < dim

    if HAS_INPUTS_EMBEDS:
        word_row = inputs_embeds_ptr + batch * stride_emb_b + pos_in_seq * stride_emb_s
    else:
        word_id = tl.load(ids_ptr + batch * stride_ids_b + pos_in_seq * stride_ids_s).to(tl.int64)
        word_row = word_ptr + word_id * stride_word_row
    x = tl.load(word_row + cols, mask=col_valid, other=0.0).to(tl.float32)

    if HAS_POSITION_IDS:
        position = tl.load(position_ids_ptr + batch * stride_pos_b + pos_in_seq * stride_pos_s).to(tl.int64)
    else:
        position = pos_in_seq
    x += tl.load(position_table_ptr + position * stride_position_row + cols, mask=col_valid, other=0.0).to(tl.float32)

    if HAS_LANGS:
        lang = tl.load(langs_ptr + batch * stride_lang_b + pos_in_seq * stride_lang_s).to(tl.int64)
        x += tl.load(lang_table_ptr + lang * stride_lang_row + cols, mask=col_valid, other=0.0).to(tl.float32)
    if HAS_TOKEN_TYPES:
        token_type = tl.load(token_type_ids_ptr + batch * stride_tt_b + pos_in_seq * stride_tt_s).to(tl.int64)
        x += tl.load(word_ptr + token_type * stride_word_row + cols, mask=col_valid, other=0.0).to(tl.float32)

    y = normalize_row(x, cols, col_valid, dim, eps, ln_weight_ptr, ln_bias_ptr)
    if HAS_ROW_MASK:
        y = y * tl.load(row_mask_ptr + token).to(tl.float32)
    tl.store(out_ptr + token * dim + cols, y.to(out_ptr.dtype.element_ty), mask=col_valid)


def _strides_2d(tensor):
    return tensor.stride() if tensor is not None else (0, 0)


def _embedding_layer_norm(input_ids, inputs_embeds, position_ids, langs, token_type_ids, word_embeddings,
                          position_embeddings, lang_embeddings, ln_weight, ln_bias, eps, row_mask, batch, seq_len):
    dim = word_embeddings.shape[1]
    dtype = inputs_embeds.dtype if inputs_embeds is not None else word_embeddings.dtype
    out = torch.empty((batch, seq_len, dim), dtype=dtype, device=word_embeddings.device)
    block_d = triton.next_power_of_2(dim)
    any_index = input_ids if input_ids is not None else out  # placeholder for unused pointers
    _embedding_layer_norm_kernel[(batch * seq_len,)](
        any_index,
        inputs_embeds if inputs_embeds is not None else out,
        position_ids if position_ids is not None else any_index,
        langs if langs is not None else any_index,
        token_type_ids if token_type_ids is not None else any_index,
        word_embeddings,
        position_embeddings,
        lang_embeddings if lang_embeddings is not None else position_embeddings,
        ln_weight,
        ln_bias,
        row_mask if row_mask is not None else ln_weight,
        out,
        *_strides_2d(input_ids),
        *(inputs_embeds.stride()[:2] if inputs_embeds is not None else (0, 0)),
        *_strides_2d(position_ids),
        *_strides_2d(langs),
        *_strides_2d(token_type_ids),
        word_embeddings.stride(0),
        position_embeddings.stride(0),
        lang_embeddings.stride(0) if lang_embeddings is not None else 0,
        seq_len,
        dim,
        eps,
        HAS_INPUTS_EMBEDS=inputs_embeds is not None,
        HAS_POSITION_IDS=position_ids is not None,
        HAS_LANGS=langs is not None,
        HAS_TOKEN_TYPES=token_type_ids is not None,
        HAS_ROW_MASK=row_mask is not None,
        BLOCK_D=block_d,
        num_warps=1 if interpreting() else max(1, min(8, block_d // 256)),
    )
    return out


def _check_table(name, table, dim=None):
    check_floating(name, table)
    if table.dim() != 2 or table.stride(1) != 1 or (dim is not None and table.shape[1] != dim):
        raise ValueError(
            f"{name} must be a (rows, {dim or 'dim'}) table with contiguous rows, got {tuple(table.shape)}")


def _check_index(name, tensor, batch, seq_len, allow_broadcast_batch=False):
    if not isinstance(tensor, torch.Tensor) or tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {getattr(tensor, 'dtype', type(tensor).__name__)}")
    allowed = {(batch, seq_len)} | ({(1, seq_len)} if allow_broadcast_batch else set())
    if tuple(tensor.shape) not in allowed:
        raise ValueError(f"{name} must have shape ({batch}, {seq_len}), got {tuple(tensor.shape)}")
    return tensor.expand(batch, seq_len)


def embedding_layer_norm(
    input_ids: torch.Tensor,
    word_embeddings: torch.Tensor,
    position_embeddings: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    *,
    inputs_embeds: torch.Tensor = None,
    position_ids: torch.Tensor = None,
    langs: torch.Tensor = None,
    lang_embeddings: torch.Tensor = None,
    token_type_ids: torch.Tensor = None,
    row_mask: torch.Tensor = None,
) -> torch.Tensor:
    """XLM embeddings + layer_norm_emb + padding mask; returns (batch, seq, dim).

    input_ids: (batch, seq) int, or None when inputs_embeds (batch, seq, dim) is given.
    word_embeddings: (vocab, dim); position_embeddings: (max_positions, dim);
    ln_weight, ln_bias: (dim,) of layer_norm_emb. position_ids: (batch or 1, seq) int,
    default 0..seq-1. langs: (batch, seq) int with lang_embeddings (n_langs, dim).
    token_type_ids: (batch, seq) int, looked up in word_embeddings. row_mask: the
    (batch, seq) padding mask multiplied into the output, or None.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("give exactly one of input_ids and inputs_embeds")
    _check_table("word_embeddings", word_embeddings)
    dim = word_embeddings.shape[1]
    _check_table("position_embeddings", position_embeddings, dim)
    if inputs_embeds is not None:
        check_floating("inputs_embeds", inputs_embeds)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != dim or inputs_embeds.stride(-1) != 1:
            raise ValueError(f"inputs_embeds must be (batch, seq, {dim}) with a contiguous last dim, "
                             f"got {tuple(inputs_embeds.shape)}")
        batch, seq_len = inputs_embeds.shape[:2]
    else:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a (batch, seq) tensor, got {getattr(input_ids, 'shape', input_ids)}")
        batch, seq_len = input_ids.shape
        _check_index("input_ids", input_ids, batch, seq_len)
    dtype = inputs_embeds.dtype if inputs_embeds is not None else word_embeddings.dtype
    for name, table in (("position_embeddings", position_embeddings), ("word_embeddings", word_embeddings),
                        ("lang_embeddings", lang_embeddings)):
        if table is not None and table.dtype != dtype:
            raise TypeError(f"{name} must be {dtype} like the word vectors, got {table.dtype}")
    for name, vector in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        check_floating(name, vector)
        if vector.shape != (dim,):
            raise ValueError(f"{name} must have shape ({dim},), got {tuple(vector.shape)}")
    if position_ids is not None:
        position_ids = _check_index("position_ids", position_ids, batch, seq_len, allow_broadcast_batch=True)
    elif seq_len > position_embeddings.shape[0]:
        raise ValueError(f"sequence length {seq_len} exceeds position_embeddings rows {position_embeddings.shape[0]}")
    if (langs is None) != (lang_embeddings is None):
        raise ValueError("langs and lang_embeddings must be given together")
    if langs is not None:
        _check_table("lang_embeddings", lang_embeddings, dim)
        _check_index("langs", langs, batch, seq_len)
    if token_type_ids is not None:
        _check_index("token_type_ids", token_type_ids, batch, seq_len)
    if not isinstance(eps, (int, float)) or eps <= 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    mask_flat = row_mask_for_kernel("row_mask", row_mask, batch * seq_len) if row_mask is not None else None
    check_same_device(input_ids=input_ids, inputs_embeds=inputs_embeds, word_embeddings=word_embeddings,
                      position_embeddings=position_embeddings, ln_weight=ln_weight, ln_bias=ln_bias,
                      position_ids=position_ids, langs=langs, lang_embeddings=lang_embeddings,
                      token_type_ids=token_type_ids, row_mask=mask_flat)
    return _embedding_layer_norm(input_ids, inputs_embeds, position_ids, langs, token_type_ids, word_embeddings,
                                 position_embeddings, lang_embeddings, ln_weight, ln_bias, float(eps), mask_flat,
                                 batch, seq_len)
