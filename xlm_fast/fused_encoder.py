"""XLMModel's embeddings and layers on the fused Triton kernels: the counterpart of
XLMModel._torch_encoder_forward that backend.select_backend chooses, for inference and
for training (every kernel has its backward; dropout is drawn inside the kernels).

Fused QKV projection per attention module: weight (3 * dim, dim) and bias (3 * dim,)
laid out [q | k | v]. On first use the three Linears' parameters are copied once into
these buffers and each Parameter's .data is re-pointed at its slice: no weight memory
is duplicated, the state dict keeps transformers' names, and optimizers keep their
Parameter objects. In-place updates (load_state_dict, optimizer steps) land in the
buffers directly; anything that gives a parameter new storage (.to(), .half(), a new
Parameter) is detected by address and the buffers are rebuilt. The projection's
autograd Function hands the gradient of the fused weight back as the three
Parameters' gradients (row blocks of one GEMM's result).

Under torch.autocast the encoder runs in the autocast dtype as a whole (autocast's
per-op rules are off inside): each weight is cast once per call (differentiably, so
the gradients reach the fp32 parameters), the embeddings' gather and LayerNorm run in
the tables' dtype before one cast, and the outputs come back in the weights' dtype, as
transformers' XLM gives them under autocast.
"""

import weakref

import torch

_fused_qkv_cache = weakref.WeakKeyDictionary()


def _slices(buffer):
    """buffer's three equal row blocks [q | k | v]."""
    return buffer.chunk(3, dim=0)


def _is_view_of(tensor, block):
    return (tensor.dtype == block.dtype and tensor.device == block.device and tensor.shape == block.shape
            and tensor.stride() == block.stride() and tensor.data_ptr() == block.data_ptr())


def fused_qkv_weights(attention):
    """(weight (3 * dim, dim), bias (3 * dim,)): the buffers that q_lin, k_lin and v_lin's
    parameters are slices of; built (or rebuilt after new storage) here."""
    linears = (attention.q_lin, attention.k_lin, attention.v_lin)
    cached = _fused_qkv_cache.get(attention)
    if cached is not None and all(
        _is_view_of(linear.weight, weight_block) and _is_view_of(linear.bias, bias_block)
        for linear, weight_block, bias_block in zip(linears, _slices(cached[0]), _slices(cached[1]))
    ):
        return cached
    parameters = [p for linear in linears for p in (linear.weight, linear.bias)]
    if len({(p.dtype, p.device) for p in parameters}) != 1:
        raise ValueError("q_lin, k_lin and v_lin parameters must share one dtype and device for the fused path, "
                         f"got {sorted({(str(p.dtype), str(p.device)) for p in parameters})}")
    # normal tensors even inside torch.inference_mode(): they become the parameters' storage,
    # which training may use later
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat([linear.weight for linear in linears], dim=0)
        bias = torch.cat([linear.bias for linear in linears], dim=0)
    for linear, weight_block, bias_block in zip(linears, _slices(weight), _slices(bias)):
        linear.weight.data = weight_block
        linear.bias.data = bias_block
    _fused_qkv_cache[attention] = (weight, bias)
    return weight, bias


class _FusedQKVLinear(torch.autograd.Function):
    """x @ weight^T + bias with the fused (3 * dim, dim) weight; the gradients go to the
    six q/k/v Parameters given after it (whose values the fused weight holds)."""

    @staticmethod
    def forward(ctx, x, weight, bias, q_weight, k_weight, v_weight, q_bias, k_bias, v_bias):
        ctx.save_for_backward(x, weight)
        ctx.parameter_dtype = q_weight.dtype
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        weight_grads = bias_grads = (None, None, None)
        if any(ctx.needs_input_grad[3:6]):
            grad_weight = grad_out.reshape(-1, weight.shape[0]).t() @ x.reshape(-1, weight.shape[1])
            weight_grads = _slices(grad_weight.to(ctx.parameter_dtype))
        if any(ctx.needs_input_grad[6:]):
            bias_grads = _slices(grad_out.reshape(-1, weight.shape[0]).sum(0, dtype=torch.float32)
                                 .to(ctx.parameter_dtype))
        weight_grads = [g if wanted else None for g, wanted in zip(weight_grads, ctx.needs_input_grad[3:6])]
        bias_grads = [g if wanted else None for g, wanted in zip(bias_grads, ctx.needs_input_grad[6:])]
        return (grad_x, None, None, *weight_grads, *bias_grads)


def _fused_qkv_linear(tensor, attention, cast):
    """(batch, seq, 3 * dim) projection of `tensor` (batch, seq, dim)."""
    weight, bias = fused_qkv_weights(attention)
    linears = (attention.q_lin, attention.k_lin, attention.v_lin)
    parameters = [linear.weight for linear in linears] + [linear.bias for linear in linears]
    if not (torch.is_grad_enabled() and any(p.requires_grad for p in parameters)):
        return torch.nn.functional.linear(tensor, cast(weight), cast(bias))
    with torch.no_grad():  # the Function routes the gradients; the casts need no graph of their own
        weight, bias = cast(weight), cast(bias)
    return _FusedQKVLinear.apply(tensor, weight, bias, *parameters)


def largest_dropout(model):
    """The largest dropout probability a call of `model` (XLMModel) applies: 0 in eval mode."""
    if not model.training:
        return 0.0
    return max([model.dropout] + [attention.dropout for attention in model.attentions]
               + [ffn.dropout for ffn in model.ffns])


def _fused_layer(model, i, tensor, key_padding, padding_mask, layer_head_mask, activation, cast):
    """Layer i: (batch, seq, dim) -> (batch, seq, dim), the unit that gradient
    checkpointing recomputes. One GEMM for the fused QKV projection, flash attention
    reading q, k, v as strided views of its output, out_lin and lin2 each as a library
    GEMM whose bias + dropout + residual + LayerNorm (+ padding mask after lin2) run in
    one Triton pass, lin1 as a GEMM with a fused bias + activation, which the backward
    recomputes rather than keeps."""
    from .triton_kernels.attention import flash_attention, split_fused_qkv
    from .triton_kernels.ffn import feed_forward_residual_layer_norm, linear_residual_layer_norm

    attention, ffn = model.attentions[i], model.ffns[i]
    norm1, norm2 = model.layer_norm1[i], model.layer_norm2[i]
    # the PyTorch path's probabilities: attention.dropout on the attention weights,
    # model.dropout after out_lin, ffn.dropout after lin2
    attention_dropout, output_dropout, ffn_dropout = ((attention.dropout, model.dropout, ffn.dropout)
                                                      if model.training else (0.0, 0.0, 0.0))
    q, k, v = split_fused_qkv(_fused_qkv_linear(tensor, attention, cast), attention.n_heads)
    context = flash_attention(q, k, v, head_scale=layer_head_mask, **key_padding,
                              dropout_p=attention_dropout)
    tensor = linear_residual_layer_norm(context, cast(attention.out_lin.weight), cast(attention.out_lin.bias), tensor,
                                        cast(norm1.weight), cast(norm1.bias), norm1.eps,
                                        dropout_p=output_dropout)
    return feed_forward_residual_layer_norm(tensor, cast(ffn.lin1.weight), cast(ffn.lin1.bias),
                                            cast(ffn.lin2.weight), cast(ffn.lin2.bias), tensor, cast(norm2.weight),
                                            cast(norm2.bias), norm2.eps, activation, row_mask=padding_mask,
                                            dropout_p=ffn_dropout)


def triton_encoder_forward(model, *, inputs, position_ids, langs, token_type_ids, padding_mask,
                           lengths, head_mask, output_hidden_states, compute_dtype=None):
    """Fused forward of XLMModel's embeddings and layers.

    model          XLMModel (HF parameter names); its training flag and its modules'
                   dropout probabilities decide the dropout, its gradient_checkpointing
                   the recomputation of layers in the backward
    inputs         (batch, seq) token ids, or (batch, seq, dim) embeddings
    position_ids   (batch or 1, seq) int64
    langs          (batch, seq) int64 or None (None also when the model has no lang embeddings)
    token_type_ids (batch, seq) int64 or None
    padding_mask   (batch, seq) attention_mask values (any dtype) or the bool prefix mask of
                   `lengths`: nonzero keys are attended when not causal; every layer's
                   output rows are multiplied by the values, fractions included, as in XLM
    lengths        (batch,) int64 when padding_mask is the prefix mask of these lengths, else None
    head_mask      (n_layers, n_heads) float, per-layer (n_heads of the layer,) tensors when
                   heads were pruned, or None
    compute_dtype  the dtype the layers run in when it differs from the weights' (autocast), or None
    Returns (last_hidden_state, hidden_states tuple or None), in the weights' dtype.
    chunk_size_feed_forward only bounds memory in the PyTorch path (same result).
    """
    from .triton_kernels.attention import key_mask_prefix_lengths
    from .triton_kernels.embedding import embedding_layer_norm

    weight_dtype = model.embeddings.weight.dtype
    if compute_dtype is None or compute_dtype == weight_dtype:
        def cast(tensor):
            return tensor
        compute_dtype = weight_dtype
    else:
        def cast(tensor):
            return tensor.to(compute_dtype)

    given_embeddings = inputs.is_floating_point()
    with torch.autocast(inputs.device.type, enabled=False):
        tensor = embedding_layer_norm(
            None if given_embeddings else inputs,
            model.embeddings.weight,
            model.position_embeddings.weight,
            model.layer_norm_emb.weight,
            model.layer_norm_emb.bias,
            model.layer_norm_emb.eps,
            inputs_embeds=inputs.to(weight_dtype) if given_embeddings else None,
            position_ids=position_ids,
            langs=langs,
            lang_embeddings=model.lang_embeddings.weight if langs is not None else None,
            token_type_ids=token_type_ids,
            row_mask=padding_mask,
            dropout_p=model.dropout if model.training else 0.0,
        )
        tensor = cast(tensor)
        # XLM: key padding only without causal; lengths let the kernel skip padded key tiles
        if model.causal:
            key_padding = dict(causal=True)
        elif lengths is not None:  # padding-only query tiles are skipped: their rows are zeroed below
            key_padding = dict(lengths=lengths, zero_padded_queries=True)
        else:  # rows of the mask that are prefixes skip tiles as lengths do; found once, on the device
            key_mask = padding_mask != 0  # one byte per key for the kernel to read, whatever the mask's dtype
            key_padding = dict(key_padding_mask=key_mask, key_mask_lengths=key_mask_prefix_lengths(key_mask),
                               zero_padded_queries=True)
        activation = "gelu" if model.config.gelu_activation else "relu"
        checkpoint = getattr(model, "_gradient_checkpointing_func", None)
        checkpointing = (getattr(model, "gradient_checkpointing", False) and model.training
                         and torch.is_grad_enabled() and checkpoint is not None)
        every_n_layers = getattr(model, "_checkpoint_every_n_layers", 1)

        hidden_states = () if output_hidden_states else None
        for i in range(model.n_layers):
            if output_hidden_states:
                hidden_states = hidden_states + (tensor,)
            layer = (model, i, tensor, key_padding, padding_mask, None if head_mask is None else head_mask[i],
                     activation, cast)
            if checkpointing and i % every_n_layers == 0:
                tensor = checkpoint(_fused_layer, *layer)
            else:
                tensor = _fused_layer(*layer)
        if output_hidden_states:
            hidden_states = hidden_states + (tensor,)
    if compute_dtype != weight_dtype:
        tensor = tensor.to(weight_dtype)
        hidden_states = None if hidden_states is None else tuple(h.to(weight_dtype) for h in hidden_states)
    return tensor, hidden_states
