"""The one place that decides, per call, between the fused Triton path and the PyTorch
path of XLMModel's encoder.

XLM_FAST_BACKEND=torch|triton|auto (default auto):
  auto    Triton for CUDA tensors when triton imports and the call is covered.
  triton  Triton whenever the call is covered, also on CPU tensors under
          TRITON_INTERPRET=1 (how CI checks the kernels without a GPU).
  torch   always the PyTorch path.
Calls the kernels do not cover take the PyTorch path: output_attentions=True, a
decoding cache, gradients, training with dropout (no backward/dropout kernels yet),
dtypes other than fp16/bf16/fp32 (float64 references, say), torch.autocast regions (the
kernels compute in the weights' dtype), and a layer whose heads were all pruned (its
attention output is out_lin's bias alone). Layers pruned to different head counts are
covered: each layer's fused QKV and attention take its own heads.
"""

import functools
import os
import weakref

import torch

BACKEND_ENV = "XLM_FAST_BACKEND"
BACKEND_CHOICES = ("auto", "triton", "torch")
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def requested_backend():
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"{BACKEND_ENV} must be one of {BACKEND_CHOICES}, got {choice!r}")
    return choice


def interpreter_enabled():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def triton_importable():
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_runs_on(device):
    """Whether the Triton kernels can run on tensors of `device`."""
    return triton_importable() and (device.type == "cuda" or interpreter_enabled())


def autocast_active(device):
    """Whether torch.autocast is on for `device`: the kernels would compute in the weights'
    dtype, not autocast's, so such calls take the PyTorch path."""
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device.type == "cpu" else torch.is_autocast_enabled()


def select_backend(device, *, dtype, output_attentions, uses_cache, needs_grad, dropout_active,
                   headless_layers=False):
    """Returns "triton" or "torch" for one encoder call on tensors of `device` and
    floating-point `dtype` (None when the inputs' dtype differs from the weights');
    headless_layers: some layer has no attention head left after prune_heads."""
    choice = requested_backend()
    uncovered = (dtype not in KERNEL_DTYPES or output_attentions or uses_cache or needs_grad or dropout_active
                 or headless_layers or autocast_active(device))
    if choice == "torch" or uncovered:
        return "torch"
    if choice == "triton":
        if not triton_runs_on(device):
            raise RuntimeError(
                f"{BACKEND_ENV}=triton but the Triton kernels cannot run on {device}: "
                "triton must be installed, and CPU tensors need TRITON_INTERPRET=1"
            )
        return "triton"
    return "triton" if device.type == "cuda" and triton_importable() else "torch"


# ---- the Triton path ----------------------------------------------------------------
# Fused QKV projection per attention module: weight (3 * dim, dim) and bias (3 * dim,)
# laid out [q | k | v]. On first use the three Linears' parameters are copied once into
# these buffers and each Parameter's .data is re-pointed at its slice: no weight memory
# is duplicated, the state dict keeps transformers' names, and optimizers keep their
# Parameter objects. In-place updates (load_state_dict, optimizer steps) land in the
# buffers directly; anything that gives a parameter new storage (.to(), .half(), a new
# Parameter) is detected by address and the buffers are rebuilt.
_fused_qkv_cache = weakref.WeakKeyDictionary()


def _slices(buffer):
    """buffer's three equal row blocks [q | k | v]."""
    return buffer.chunk(3, dim=0)


def _is_view_of(tensor, block):
    return (tensor.dtype == block.dtype and tensor.device == block.device and tensor.shape == block.shape
            and tensor.stride() == block.stride() and tensor.data_ptr() == block.data_ptr())


def _fused_qkv(attention):
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


def triton_encoder_forward(model, *, inputs, position_ids, langs, token_type_ids, padding_mask,
                           lengths, head_mask, output_hidden_states):
    """Fused forward of XLMModel's embeddings and layers.

    model          XLMModel (HF parameter names)
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
    Returns (last_hidden_state, hidden_states tuple or None).

    Per layer: one GEMM for the fused QKV projection, flash attention reading q, k, v
    as strided views of its output, then out_lin and lin2 each as a library GEMM whose
    bias + residual + LayerNorm (+ padding mask after lin2) run in one Triton pass, and
    lin1 as a GEMM with a fused bias + activation pass. chunk_size_feed_forward only
    bounds memory in the PyTorch path and is not needed here (same result).
    """
    from .triton_kernels.attention import flash_attention, key_mask_prefix_lengths, split_fused_qkv
    from .triton_kernels.embedding import embedding_layer_norm
    from .triton_kernels.ffn import linear_activation, linear_residual_layer_norm

    given_embeddings = inputs.is_floating_point()
    tensor = embedding_layer_norm(
        None if given_embeddings else inputs,
        model.embeddings.weight,
        model.position_embeddings.weight,
        model.layer_norm_emb.weight,
        model.layer_norm_emb.bias,
        model.layer_norm_emb.eps,
        inputs_embeds=inputs if given_embeddings else None,
        position_ids=position_ids,
        langs=langs,
        lang_embeddings=model.lang_embeddings.weight if langs is not None else None,
        token_type_ids=token_type_ids,
        row_mask=padding_mask,
    )
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

    hidden_states = () if output_hidden_states else None
    for i in range(model.n_layers):
        if output_hidden_states:
            hidden_states = hidden_states + (tensor,)
        attention, ffn = model.attentions[i], model.ffns[i]
        norm1, norm2 = model.layer_norm1[i], model.layer_norm2[i]

        qkv_weight, qkv_bias = _fused_qkv(attention)
        qkv = torch.nn.functional.linear(tensor, qkv_weight, qkv_bias)  # (batch, seq, 3 * dim)
        q, k, v = split_fused_qkv(qkv, attention.n_heads)
        context = flash_attention(q, k, v, head_scale=None if head_mask is None else head_mask[i], **key_padding)
        tensor = linear_residual_layer_norm(context, attention.out_lin.weight, attention.out_lin.bias, tensor,
                                            norm1.weight, norm1.bias, norm1.eps)

        hidden = linear_activation(tensor, ffn.lin1.weight, ffn.lin1.bias, activation)
        tensor = linear_residual_layer_norm(hidden, ffn.lin2.weight, ffn.lin2.bias, tensor,
                                            norm2.weight, norm2.bias, norm2.eps, row_mask=padding_mask)
    if output_hidden_states:
        hidden_states = hidden_states + (tensor,)
    return tensor, hidden_states
