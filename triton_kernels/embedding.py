"""XLM input embeddings in one kernel: gathers, sum, LayerNorm and padding mask.

    y = LN_emb(word_emb[ids] + pos_emb[position] (+ lang_emb[langs])
               (+ word_emb[token_type_ids])) * mask[..., None]

One program handles a block of BLOCK_ROWS tokens (1 on a GPU, many in Triton's CPU
interpreter: layer_norm._block_rows): it gathers each token's rows, sums them in fp32
(HF sums in the model dtype), normalises with layer_norm's row-block helpers and
multiplies by the token's padding-mask value.
`inputs_embeds` can replace the word-embedding gather. Token type ids go through the
WORD embeddings, as in XLM.

Index values are not range-checked here (that would need a device sync per call); the
model validates ids, langs and positions before calling.

Backward, with s the gathered sum, xhat = (s - mean) * rstd and g = dy * mask (the
padding mask gets no gradient): ds = rstd * (g * w - mean(g * w) - xhat * mean(g * w * xhat)),
the LayerNorm backward of layer_norm.py. ds is the gradient of inputs_embeds, and each
table's gradient is ds scatter-added over the token rows that read it (token type ids
into the word table too); dweight and dbias are per-program partial column sums of
g * xhat and g, then a fixed-order torch.sum. The forward saves mean and rstd (fp32,
8 bytes per token) and the backward re-gathers s from the indices and tables in the
forward's order (bit for bit the same s), so the forward stores nothing (tokens, dim)
for it. The backward kernel writes ds once in fp32 (tokens, dim), a transient buffer;
the scatter is torch's index_add_ of it into an fp32 table buffer, then one cast:
atomics on CUDA by default, a deterministic sort-based algorithm under
torch.use_deterministic_algorithms(True) (nn.Embedding's backward follows the same
switch, so one setting makes the whole step deterministic), and no 16-bit rounding
per addition when the tables are fp16 / bf16.

Dropout (dropout_p > 0; triton_kernels.dropout holds the random-stream contract), as
XLM in training: y = D * LN_emb(...) * mask[..., None], D = keep / (1 - p) per element,
element (token, col) of the (batch * seq, dim) output at Philox offset token * dim + col.
The backward regenerates D from the saved seed (no mask is stored) and uses
g = dy * mask * D in the LayerNorm backward above. DROPOUT is a constexpr, so
dropout_p == 0 compiles the kernels without it.
"""
import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ._utils import check_floating, check_same_device, interpreting, row_mask_for_kernel
from .dropout import check_dropout_p, philox_seed
from .layer_norm import (
    _backward_programs,
    _block_rows,
    _rows,
    dropout_rows_scale,
    layer_norm_rows,
    layer_norm_rows_grad_inputs,
    layer_norm_rows_grad_sum,
)


@triton.jit
def _gather_sum(
    tokens, token_valid, cols, col_valid, valid,
    ids_ptr, inputs_embeds_ptr, position_ids_ptr, langs_ptr, token_type_ids_ptr,
    word_ptr, position_table_ptr, lang_table_ptr,
    stride_ids_b, stride_ids_s, stride_emb_b, stride_emb_s, stride_pos_b, stride_pos_s,
    stride_lang_b, stride_lang_s, stride_tt_b, stride_tt_s,
    stride_word_row, stride_position_row, stride_lang_row,
    seq_len,
    HAS_INPUTS_EMBEDS: tl.constexpr, HAS_POSITION_IDS: tl.constexpr, HAS_LANGS: tl.constexpr,
    HAS_TOKEN_TYPES: tl.constexpr,
):
    """fp32 sums s (BLOCK_ROWS, BLOCK_D) of the embedding rows of tokens (BLOCK_ROWS,) int64,
    zeros outside valid (token_valid x col_valid); the forward and the backward add in this one
    order, so the backward's s is the forward's bit for bit."""
    batch = tokens // seq_len
    pos_in_seq = tokens % seq_len
    if HAS_INPUTS_EMBEDS:
        word_rows = inputs_embeds_ptr + batch * stride_emb_b + pos_in_seq * stride_emb_s
    else:
        word_id = tl.load(ids_ptr + batch * stride_ids_b + pos_in_seq * stride_ids_s, mask=token_valid,
                          other=0).to(tl.int64)
        word_rows = word_ptr + word_id * stride_word_row
    x = tl.load(word_rows[:, None] + cols[None, :], mask=valid, other=0.0).to(tl.float32)

    if HAS_POSITION_IDS:
        position = tl.load(position_ids_ptr + batch * stride_pos_b + pos_in_seq * stride_pos_s, mask=token_valid,
                           other=0).to(tl.int64)
    else:
        position = pos_in_seq
    x += tl.load(position_table_ptr + position[:, None] * stride_position_row + cols[None, :], mask=valid,
                 other=0.0).to(tl.float32)

    if HAS_LANGS:
        lang = tl.load(langs_ptr + batch * stride_lang_b + pos_in_seq * stride_lang_s, mask=token_valid,
                       other=0).to(tl.int64)
        x += tl.load(lang_table_ptr + lang[:, None] * stride_lang_row + cols[None, :], mask=valid,
                     other=0.0).to(tl.float32)
    if HAS_TOKEN_TYPES:
        token_type = tl.load(token_type_ids_ptr + batch * stride_tt_b + pos_in_seq * stride_tt_s, mask=token_valid,
                             other=0).to(tl.int64)
        x += tl.load(word_ptr + token_type[:, None] * stride_word_row + cols[None, :], mask=valid,
                     other=0.0).to(tl.float32)
    return x


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
    mean_ptr,  # (batch * seq,) fp32 out: token means, for the backward; written when STORE_STATS
    rstd_ptr,  # (batch * seq,) fp32 out: 1 / sqrt(var + eps) per token; written when STORE_STATS
    stride_ids_b, stride_ids_s,  # ids strides
    stride_emb_b, stride_emb_s,  # inputs_embeds strides (last dim contiguous)
    stride_pos_b, stride_pos_s,  # position_ids strides (stride_pos_b may be 0: broadcast)
    stride_lang_b, stride_lang_s,  # langs strides
    stride_tt_b, stride_tt_s,  # token_type_ids strides
    stride_word_row, stride_position_row, stride_lang_row,  # table row strides
    n_tokens,  # batch * seq
    seq_len,  # tokens per batch row
    dim,  # hidden size
    eps,  # LayerNorm epsilon
    seed,  # Philox seed of the dropout mask; read when DROPOUT
    dropout_p,  # fp32 probability of dropping an element of the normalised output; read when DROPOUT
    HAS_INPUTS_EMBEDS: tl.constexpr,
    HAS_POSITION_IDS: tl.constexpr,
    HAS_LANGS: tl.constexpr,
    HAS_TOKEN_TYPES: tl.constexpr,
    HAS_ROW_MASK: tl.constexpr,
    STORE_STATS: tl.constexpr,  # gradients wanted: save mean / rstd (inference skips the stores)
    DROPOUT: tl.constexpr,  # drop elements of the normalised output (before the padding mask, as XLM)
    BLOCK_ROWS: tl.constexpr,  # tokens per program (layer_norm._block_rows)
    BLOCK_D: tl.constexpr,  # dim padded to a power of two
):
    tokens = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    if BLOCK_ROWS == 1:  # a program per token: every token is real, and constant masks fold away
        token_valid = tl.full((BLOCK_ROWS,), True, tl.int1)
    else:
        token_valid = tokens < n_tokens
    cols = tl.arange(0, BLOCK_D)
    col_valid = cols < dim
    valid = token_valid[:, None] & col_valid[None, :]
    x = _gather_sum(tokens, token_valid, cols, col_valid, valid, ids_ptr, inputs_embeds_ptr, position_ids_ptr,
                    langs_ptr, token_type_ids_ptr, word_ptr, position_table_ptr, lang_table_ptr,
                    stride_ids_b, stride_ids_s, stride_emb_b, stride_emb_s, stride_pos_b, stride_pos_s,
                    stride_lang_b, stride_lang_s, stride_tt_b, stride_tt_s,
                    stride_word_row, stride_position_row, stride_lang_row, seq_len,
                    HAS_INPUTS_EMBEDS, HAS_POSITION_IDS, HAS_LANGS, HAS_TOKEN_TYPES)
    y, mean, rstd = layer_norm_rows(x, cols, col_valid, dim, eps, ln_weight_ptr, ln_bias_ptr)
    if DROPOUT:
        y = y * dropout_rows_scale(seed, tokens, dim, cols, dropout_p)
    if HAS_ROW_MASK:
        y = y * tl.load(row_mask_ptr + tokens, mask=token_valid, other=0.0).to(tl.float32)[:, None]
    tl.store(out_ptr + tokens[:, None] * dim + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=valid)
    if STORE_STATS:
        tl.store(mean_ptr + tokens, mean, mask=token_valid)
        tl.store(rstd_ptr + tokens, rstd, mask=token_valid)


@triton.jit
def _embedding_layer_norm_backward_kernel(
    grad_out_ptr,  # (batch * seq, dim) dL/dy, last dim contiguous
    ids_ptr,  # (batch, seq) int word ids; read when not HAS_INPUTS_EMBEDS
    inputs_embeds_ptr,  # (batch, seq, dim) given word vectors; read when HAS_INPUTS_EMBEDS
    position_ids_ptr,  # (batch or 1, seq) int positions; read when HAS_POSITION_IDS
    langs_ptr,  # (batch, seq) int language ids; read when HAS_LANGS
    token_type_ids_ptr,  # (batch, seq) int ids into the WORD table; read when HAS_TOKEN_TYPES
    word_ptr,  # (vocab, dim) word embedding table
    position_table_ptr,  # (max_positions, dim) position embedding table
    lang_table_ptr,  # (n_langs, dim) language embedding table
    ln_weight_ptr,  # (dim,) LayerNorm gain
    row_mask_ptr,  # (batch * seq,) padding mask; read when HAS_ROW_MASK
    mean_ptr,  # (batch * seq,) fp32 token means saved by the forward
    rstd_ptr,  # (batch * seq,) fp32 1 / sqrt(var + eps) saved by the forward
    grad_sum_ptr,  # (batch * seq, dim) fp32 out, contiguous: ds; written when STORE_GRAD_SUM
    partial_weight_ptr,  # (programs, dim) fp32 out: this program's tokens' sum of g * xhat
    partial_bias_ptr,  # (programs, dim) fp32 out: this program's tokens' sum of g
    stride_grad_out_row,  # grad_out row stride in elements
    stride_ids_b, stride_ids_s,  # ids strides
    stride_emb_b, stride_emb_s,  # inputs_embeds strides (last dim contiguous)
    stride_pos_b, stride_pos_s,  # position_ids strides (stride_pos_b may be 0: broadcast)
    stride_lang_b, stride_lang_s,  # langs strides
    stride_tt_b, stride_tt_s,  # token_type_ids strides
    stride_word_row, stride_position_row, stride_lang_row,  # table row strides
    n_tokens,  # batch * seq
    seq_len,  # tokens per batch row
    dim,  # hidden size
    tokens_per_program,  # consecutive tokens each program walks, BLOCK_ROWS at a time
    seed,  # Philox seed of the forward's dropout mask; read when DROPOUT
    dropout_p,  # fp32 the forward's dropout probability; read when DROPOUT
    HAS_INPUTS_EMBEDS: tl.constexpr,
    HAS_POSITION_IDS: tl.constexpr,
    HAS_LANGS: tl.constexpr,
    HAS_TOKEN_TYPES: tl.constexpr,
    HAS_ROW_MASK: tl.constexpr,
    STORE_GRAD_SUM: tl.constexpr,  # a table or inputs_embeds wants its gradient
    DROPOUT: tl.constexpr,  # the forward dropped elements of the normalised output
    BLOCK_ROWS: tl.constexpr,  # tokens per step of a program's walk (layer_norm._block_rows)
    BLOCK_D: tl.constexpr,  # dim padded to a power of two
):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    col_valid = cols < dim
    weight = tl.load(ln_weight_ptr + cols, mask=col_valid, other=0.0).to(tl.float32)
    # column sums per row of the block, reduced over the block once at the end
    sum_weight = tl.zeros((BLOCK_ROWS, BLOCK_D), dtype=tl.float32)
    sum_bias = tl.zeros((BLOCK_ROWS, BLOCK_D), dtype=tl.float32)
    first_token = program.to(tl.int64) * tokens_per_program
    end_token = tl.minimum(first_token + tokens_per_program, n_tokens)
    for block_start in range(first_token, end_token, BLOCK_ROWS):
        tokens = block_start + tl.arange(0, BLOCK_ROWS)
        token_valid = tokens < end_token
        valid = token_valid[:, None] & col_valid[None, :]
        s = _gather_sum(tokens, token_valid, cols, col_valid, valid, ids_ptr, inputs_embeds_ptr, position_ids_ptr,
                        langs_ptr, token_type_ids_ptr, word_ptr, position_table_ptr, lang_table_ptr,
                        stride_ids_b, stride_ids_s, stride_emb_b, stride_emb_s, stride_pos_b, stride_pos_s,
                        stride_lang_b, stride_lang_s, stride_tt_b, stride_tt_s,
                        stride_word_row, stride_position_row, stride_lang_row, seq_len,
                        HAS_INPUTS_EMBEDS, HAS_POSITION_IDS, HAS_LANGS, HAS_TOKEN_TYPES)
        xhat, g, rstd = layer_norm_rows_grad_inputs(s, tokens, token_valid, cols, valid, mean_ptr, rstd_ptr,
                                                    grad_out_ptr, stride_grad_out_row, row_mask_ptr, HAS_ROW_MASK)
        if DROPOUT:  # dL/dLN = dy * mask * D
            g = g * dropout_rows_scale(seed, tokens, dim, cols, dropout_p)
        if STORE_GRAD_SUM:
            grad_sum = layer_norm_rows_grad_sum(xhat, g, rstd, weight, dim)
            tl.store(grad_sum_ptr + tokens[:, None] * dim + cols[None, :], grad_sum, mask=valid)
        sum_weight += g * xhat
        sum_bias += g
    partial = program.to(tl.int64) * dim + cols  # this program's row of the partials
    tl.store(partial_weight_ptr + partial, tl.sum(sum_weight, axis=0), mask=col_valid)
    tl.store(partial_bias_ptr + partial, tl.sum(sum_bias, axis=0), mask=col_valid)


def _strides_2d(tensor):
    return tensor.stride() if tensor is not None else (0, 0)


def _num_warps(block_d: int) -> int:
    return 1 if interpreting() else max(1, min(8, block_d // 256))


def _gather_args(input_ids, inputs_embeds, position_ids, langs, token_type_ids, word_embeddings,
                 position_embeddings, lang_embeddings, placeholder):
    """(pointer args, stride args, constexpr flags) of _gather_sum, shared by both kernels;
    placeholder stands in for absent index tensors (never read)."""
    any_index = input_ids if input_ids is not None else placeholder
    pointers = (
        any_index,
        inputs_embeds if inputs_embeds is not None else placeholder,
        position_ids if position_ids is not None else any_index,
        langs if langs is not None else any_index,
        token_type_ids if token_type_ids is not None else any_index,
        word_embeddings,
        position_embeddings,
        lang_embeddings if lang_embeddings is not None else position_embeddings,
    )
    strides = (
        *_strides_2d(input_ids),
        *(inputs_embeds.stride()[:2] if inputs_embeds is not None else (0, 0)),
        *_strides_2d(position_ids),
        *_strides_2d(langs),
        *_strides_2d(token_type_ids),
        word_embeddings.stride(0),
        position_embeddings.stride(0),
        lang_embeddings.stride(0) if lang_embeddings is not None else 0,
    )
    flags = dict(HAS_INPUTS_EMBEDS=inputs_embeds is not None, HAS_POSITION_IDS=position_ids is not None,
                 HAS_LANGS=langs is not None, HAS_TOKEN_TYPES=token_type_ids is not None)
    return pointers, strides, flags


def _embedding_layer_norm(input_ids, inputs_embeds, position_ids, langs, token_type_ids, word_embeddings,
                          position_embeddings, lang_embeddings, ln_weight, ln_bias, eps, row_mask, batch, seq_len,
                          seed, dropout_p, store_stats):
    """(out (batch, seq, dim), mean, rstd): mean / rstd (batch * seq,) fp32 when
    store_stats, else None. dropout_p > 0 drops the normalised output with mask `seed`."""
    dim = word_embeddings.shape[1]
    dtype = inputs_embeds.dtype if inputs_embeds is not None else word_embeddings.dtype
    device = word_embeddings.device
    out = torch.empty((batch, seq_len, dim), dtype=dtype, device=device)
    mean = rstd = None
    if store_stats:
        mean = torch.empty(batch * seq_len, dtype=torch.float32, device=device)
        rstd = torch.empty(batch * seq_len, dtype=torch.float32, device=device)
    block_d = triton.next_power_of_2(dim)
    block_rows = _block_rows(batch * seq_len, block_d)
    pointers, strides, flags = _gather_args(input_ids, inputs_embeds, position_ids, langs, token_type_ids,
                                            word_embeddings, position_embeddings, lang_embeddings, out)
    _embedding_layer_norm_kernel[(triton.cdiv(batch * seq_len, block_rows),)](
        *pointers,
        ln_weight,
        ln_bias,
        row_mask if row_mask is not None else ln_weight,
        out,
        mean if store_stats else out,
        rstd if store_stats else out,
        *strides,
        batch * seq_len,
        seq_len,
        dim,
        eps,
        seed,
        dropout_p,
        **flags,
        HAS_ROW_MASK=row_mask is not None,
        STORE_STATS=store_stats,
        DROPOUT=dropout_p > 0,
        BLOCK_ROWS=block_rows,
        BLOCK_D=block_d,
        num_warps=_num_warps(block_d),
    )
    return out, mean, rstd


def _scatter_rows(grad_sum, index, n_rows, dtype):
    """(n_rows, dim) table gradient: grad_sum's fp32 rows summed by index (n_tokens,)."""
    grad = torch.zeros((n_rows, grad_sum.shape[1]), dtype=torch.float32, device=grad_sum.device)
    return grad.index_add_(0, index.reshape(-1).long(), grad_sum).to(dtype)


def _embedding_layer_norm_backward(grad_out, input_ids, inputs_embeds, position_ids, langs, token_type_ids,
                                   word_embeddings, position_embeddings, lang_embeddings, ln_weight, row_mask,
                                   mean, rstd, batch, seq_len, seed, dropout_p, needs):
    """(dinputs_embeds, dword, dposition, dlang, dweight, dbias), None where `needs`
    (the same six flags) is False."""
    needs_embeds, needs_word, needs_position, needs_lang, needs_weight, needs_bias = needs
    needs_word = needs_word and (input_ids is not None or token_type_ids is not None)
    needs_lang = needs_lang and langs is not None
    dim = word_embeddings.shape[1]
    device = word_embeddings.device
    n_tokens = batch * seq_len
    store_grad_sum = needs_embeds or needs_word or needs_position or needs_lang
    programs = _backward_programs(device, n_tokens)
    grad_sum = torch.empty((n_tokens, dim), dtype=torch.float32, device=device) if store_grad_sum else None
    partials = torch.zeros((2, programs, dim), dtype=torch.float32, device=device)
    if n_tokens > 0:
        grad_out2d = _rows(grad_out, dim)
        block_d = triton.next_power_of_2(dim)
        tokens_per_program = triton.cdiv(n_tokens, programs)
        pointers, strides, flags = _gather_args(input_ids, inputs_embeds, position_ids, langs, token_type_ids,
                                                word_embeddings, position_embeddings, lang_embeddings, grad_out2d)
        _embedding_layer_norm_backward_kernel[(programs,)](
            grad_out2d,
            *pointers,
            ln_weight,
            row_mask if row_mask is not None else ln_weight,
            mean,
            rstd,
            grad_sum if store_grad_sum else partials,
            partials[0],
            partials[1],
            grad_out2d.stride(0),
            *strides,
            n_tokens,
            seq_len,
            dim,
            tokens_per_program,
            seed,
            dropout_p,
            **flags,
            HAS_ROW_MASK=row_mask is not None,
            STORE_GRAD_SUM=store_grad_sum,
            DROPOUT=dropout_p > 0,
            BLOCK_ROWS=_block_rows(tokens_per_program, block_d),
            BLOCK_D=block_d,
            num_warps=_num_warps(block_d),
        )
    sums = partials.sum(dim=1)  # (2, dim): a fixed-order reduction over the programs

    grad_embeds = grad_word = grad_position = grad_lang = None
    if needs_embeds:
        grad_embeds = grad_sum.view(batch, seq_len, dim).to(inputs_embeds.dtype)
    if needs_word:  # ids and token type ids both read the word table: one fp32 buffer for both
        word_index = [index.reshape(-1) for index in (input_ids, token_type_ids) if index is not None]
        word_rows = grad_sum if len(word_index) == 1 else grad_sum.repeat(2, 1)
        grad_word = _scatter_rows(word_rows, torch.cat(word_index), word_embeddings.shape[0], word_embeddings.dtype)
    if needs_position:
        if position_ids is not None:
            grad_position = _scatter_rows(grad_sum, position_ids, position_embeddings.shape[0],
                                          position_embeddings.dtype)
        else:  # positions 0..seq-1 in every batch row: a sum over the batch, no index
            grad_position = torch.zeros_like(position_embeddings)
            grad_position[:seq_len] = grad_sum.view(batch, seq_len, dim).sum(dim=0)
    if needs_lang:
        grad_lang = _scatter_rows(grad_sum, langs, lang_embeddings.shape[0], lang_embeddings.dtype)
    return (grad_embeds, grad_word, grad_position, grad_lang,
            sums[0].to(ln_weight.dtype) if needs_weight else None, sums[1].to(ln_weight.dtype) if needs_bias else None)


class _EmbeddingLayerNorm(torch.autograd.Function):
    """_embedding_layer_norm with its backward; index tensors and row_mask get no gradient."""

    @staticmethod
    def forward(ctx, input_ids, inputs_embeds, position_ids, langs, token_type_ids, word_embeddings,
                position_embeddings, lang_embeddings, ln_weight, ln_bias, eps, row_mask, batch, seq_len, seed,
                dropout_p):
        out, mean, rstd = _embedding_layer_norm(input_ids, inputs_embeds, position_ids, langs, token_type_ids,
                                                word_embeddings, position_embeddings, lang_embeddings, ln_weight,
                                                ln_bias, eps, row_mask, batch, seq_len, seed, dropout_p,
                                                store_stats=True)
        ctx.save_for_backward(input_ids, inputs_embeds, position_ids, langs, token_type_ids, word_embeddings,
                              position_embeddings, lang_embeddings, ln_weight, row_mask, mean, rstd)
        ctx.shape = (batch, seq_len)
        ctx.dropout = (seed, dropout_p)  # the backward regenerates the mask from these, none is stored
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable
    def backward(ctx, grad_out):
        needs = ctx.needs_input_grad
        grad_embeds, grad_word, grad_position, grad_lang, grad_weight, grad_bias = _embedding_layer_norm_backward(
            grad_out, *ctx.saved_tensors, *ctx.shape, *ctx.dropout, needs=(needs[1], *needs[5:10]))
        return (None, grad_embeds, None, None, None, grad_word, grad_position, grad_lang, grad_weight, grad_bias,
                None, None, None, None, None, None)


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
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """XLM embeddings + layer_norm_emb (+ dropout) + padding mask; returns (batch, seq, dim).

    input_ids: (batch, seq) int, or None when inputs_embeds (batch, seq, dim) is given.
    word_embeddings: (vocab, dim); position_embeddings: (max_positions, dim);
    ln_weight, ln_bias: (dim,) of layer_norm_emb. position_ids: (batch or 1, seq) int,
    default 0..seq-1. langs: (batch, seq) int with lang_embeddings (n_langs, dim).
    token_type_ids: (batch, seq) int, looked up in word_embeddings. row_mask: the
    (batch, seq) padding mask multiplied into the output, or None. dropout_p: probability
    in [0, 1) with which inverted dropout zeroes elements of the normalised output
    before the padding mask (kept ones scaled by 1 / (1 - p)), as XLM in training; 0
    runs no dropout. When > 0, one seed is drawn per call from torch's CPU generator
    (dropout.philox_seed): torch.manual_seed reproduces the mask, with or without
    gradients, and the backward regenerates it from that seed.
    Differentiable in inputs_embeds, the three tables, ln_weight and ln_bias (the table
    gradients are deterministic under torch.use_deterministic_algorithms(True)).
    """
    dropout_p = check_dropout_p("dropout_p", dropout_p)
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
    seed = philox_seed() if dropout_p > 0 else 0  # drawn before the route is chosen: both give one mask
    args = (input_ids, inputs_embeds, position_ids, langs, token_type_ids, word_embeddings, position_embeddings,
            lang_embeddings, ln_weight, ln_bias, float(eps), mask_flat, batch, seq_len, seed, dropout_p)
    differentiable = (inputs_embeds, word_embeddings, position_embeddings, lang_embeddings, ln_weight, ln_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in differentiable):
        return _EmbeddingLayerNorm.apply(*args)
    # inference: no mean / rstd stores, and no autograd.Function call (~4 us of CPU per call)
    out, _, _ = _embedding_layer_norm(*args, store_stats=False)
    return out
