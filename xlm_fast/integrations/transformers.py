"""transformers interop: route a transformers XLM model's encoder through xlm_fast's
backend in place (`apply_to_transformers`, undone by `revert`), and convert models
between the two libraries (`from_transformers`, `to_transformers`).

transformers is imported inside the functions only, so xlm_fast keeps importing and
running without it.

The routed forward is transformers' own XLMModel.forward with one detour: a call that
the fused kernels cover, and that `backend.select_backend` sends to Triton, runs
`fused_encoder.triton_encoder_forward` on the transformers module itself (its module and
parameter names are xlm_fast's) and returns transformers' BaseModelOutput or tuple.
Every other call runs the original forward unchanged, so on the PyTorch path the
outputs are bit for bit those of the unpatched model. The original takes the calls
that the kernels do not cover (output_attentions, a cache, head_mask as a named
argument (transformers 4.x), a dropout probability of 1, TorchScript, dtypes other
than fp16/bf16/fp32, pruned heads) and the calls whose inputs it would
treat in its own way (wrong shapes, devices or dtypes, values out of range, lengths
longer than the sequence), so that those keep transformers' behaviour and errors; and
any call on an encoder whose layers are not plain torch modules (LoRA or quantised
layers, parametrisations, forward hooks, offloading wrappers), which need their own
forward to run.
"""

import functools
import inspect
import types

import torch
from torch import nn

from .. import backend, fused_encoder, modeling_xlm
from ..configuration_xlm import XLMConfig
from ..modeling_xlm import EMBEDDING_INDEX_DTYPES, INTEGER_DTYPES, check_value_ranges, xlm_masks

CLASS_NAMES = ("XLMModel", "XLMWithLMHeadModel", "XLMForSequenceClassification", "XLMForQuestionAnsweringSimple",
               "XLMForQuestionAnswering", "XLMForTokenClassification", "XLMForMultipleChoice")


def _transformers_xlm():
    """transformers' XLM modeling module, or an ImportError saying what to install."""
    try:
        import transformers  # noqa: F401  (first, so that a missing package is reported as such)
        from transformers.models.xlm import modeling_xlm
    except ImportError as error:
        raise ImportError("xlm_fast.integrations.transformers needs Hugging Face transformers: "
                          "pip install transformers") from error
    return modeling_xlm


def _encoder_of(model, hf_xlm):
    """The transformers XLMModel inside `model` (a head's .transformer, or model itself)."""
    if isinstance(model, hf_xlm.XLMModel):
        return model
    encoder = getattr(model, "transformer", None) if isinstance(model, hf_xlm.XLMPreTrainedModel) else None
    if not isinstance(encoder, hf_xlm.XLMModel):
        raise TypeError(f"model must be a transformers XLM model ({', '.join(CLASS_NAMES)}), got "
                        f"{type(model).__module__}.{type(model).__name__}")
    return encoder


# ---- the routed forward -------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _routed_forward():
    """transformers' XLMModel.forward with the fused detour; built once, on first use.
    __wrapped__ shows the original's signature to inspect (PEFT, Trainer); the name stays
    this function's, so that reprs and tracebacks tell the two apart."""
    hf_xlm = _transformers_xlm()
    from transformers.modeling_outputs import BaseModelOutput

    original = hf_xlm.XLMModel.forward
    signature = inspect.signature(original)

    @functools.wraps(original, assigned=("__doc__",))
    def forward(self, *args, **kwargs):
        try:
            arguments = signature.bind(self, *args, **kwargs).arguments
        except TypeError:  # the original raises its own error
            return original(self, *args, **kwargs)
        call = _fused_call(self, arguments, hf_xlm)
        if call is None:
            return original(self, *args, **kwargs)
        return_dict = call.pop("return_dict")
        tensor, hidden_states = fused_encoder.triton_encoder_forward(self, **call)
        if not return_dict:
            return (tensor,) if hidden_states is None else (tensor, hidden_states)
        return BaseModelOutput(last_hidden_state=tensor, hidden_states=hidden_states)

    return forward


def _fused_call(encoder, arguments, hf_xlm):
    """Keyword arguments of fused_encoder.triton_encoder_forward (plus return_dict) that give
    what transformers' forward gives for this call, or None when the original must run.

    arguments: the call bound to the original's signature (given arguments only); the
    original ignores what lands in its **kwargs (transformers 5.x: head_mask,
    past_key_values, use_cache from generate), and so does the fused path."""
    config = encoder.config
    if arguments.get("cache") is not None or arguments.get("head_mask") is not None:
        return None  # head_mask is only bound where it is a named parameter (transformers 4.x)
    if getattr(config, "torchscript", False) or torch.jit.is_tracing() or torch.jit.is_scripting():
        return None

    def option(name):
        value = arguments.get(name)
        return getattr(config, name) if value is None else value

    output_attentions, output_hidden_states = option("output_attentions"), option("output_hidden_states")
    input_ids, inputs_embeds = arguments.get("input_ids"), arguments.get("inputs_embeds")
    weight = encoder.embeddings.weight
    if input_ids is not None and inputs_embeds is None:
        if not (torch.is_tensor(input_ids) and input_ids.dim() == 2 and input_ids.dtype in EMBEDDING_INDEX_DTYPES):
            return None
        inputs, dtype = input_ids, weight.dtype
    elif inputs_embeds is not None and input_ids is None:
        if not (torch.is_tensor(inputs_embeds) and inputs_embeds.dim() == 3 and inputs_embeds.size(-1) == encoder.dim):
            return None
        inputs, dtype = inputs_embeds, (weight.dtype if inputs_embeds.dtype == weight.dtype else None)
    else:  # both or neither: the original's business
        return None
    device = inputs.device

    path = backend.select_backend(
        device,
        dtype=dtype,
        output_attentions=bool(output_attentions),
        uses_cache=False,
        dropout=fused_encoder.largest_dropout(encoder),
    )
    if path != "triton" or not _plain_layers(encoder, hf_xlm):
        return None

    bs, slen = inputs.shape[:2]
    if bs == 0 or slen == 0 or weight.device != device:
        return None

    def fits(tensor, shape, dtypes=None):
        return (torch.is_tensor(tensor) and tuple(tensor.shape) == shape and tensor.device == device
                and (dtypes is None or tensor.dtype in dtypes))

    # (name, tensor, low, high) for check_value_ranges: one device sync for all of them
    ranges = [] if input_ids is None else [("input_ids", input_ids, 0, weight.size(0) - 1)]
    lengths, attention_mask = arguments.get("lengths"), arguments.get("attention_mask")
    if lengths is not None:
        if not fits(lengths, (bs,), INTEGER_DTYPES):
            return None
        ranges.append(("lengths", lengths, 0, slen))
        lengths = lengths.long()
    elif input_ids is not None:
        if encoder.pad_index is None:
            return None
        lengths = (input_ids != encoder.pad_index).sum(dim=1).long()
    else:
        lengths = torch.full((bs,), slen, dtype=torch.long, device=device)
    if attention_mask is not None and not fits(attention_mask, (bs, slen)):
        return None
    # XLM: the row mask is the attention_mask, else the prefix mask of lengths (causal
    # attention is the triangle alone, which the kernel builds itself)
    mask, _ = xlm_masks(slen, lengths, False, padding_mask=attention_mask)

    position_ids = arguments.get("position_ids")
    n_positions = encoder.position_embeddings.num_embeddings
    if position_ids is None:
        if slen > min(n_positions, encoder.position_ids.size(1)):
            return None
        position_ids = encoder.position_ids[:, :slen]
    elif fits(position_ids, (bs, slen), EMBEDDING_INDEX_DTYPES):
        ranges.append(("position_ids", position_ids, 0, n_positions - 1))
    else:
        return None
    langs = arguments.get("langs")
    if langs is not None:
        if not fits(langs, (bs, slen)):
            return None
        if encoder.use_lang_emb and encoder.n_langs > 1:  # transformers' condition for adding them
            if langs.dtype not in EMBEDDING_INDEX_DTYPES:
                return None
            ranges.append(("langs", langs, 0, encoder.lang_embeddings.num_embeddings - 1))
        else:
            langs = None
    token_type_ids = arguments.get("token_type_ids")
    if token_type_ids is not None:
        if not fits(token_type_ids, (bs, slen), EMBEDDING_INDEX_DTYPES):
            return None
        ranges.append(("token_type_ids", token_type_ids, 0, weight.size(0) - 1))
    try:
        check_value_ranges(ranges)
    except ValueError:  # out of range: the original raises (or asserts) as transformers does
        return None

    return dict(
        inputs=inputs,
        position_ids=position_ids,
        langs=langs,
        token_type_ids=token_type_ids,
        padding_mask=mask,
        lengths=None if attention_mask is not None else lengths,
        head_mask=None,
        output_hidden_states=bool(output_hidden_states),
        compute_dtype=backend.compute_dtype(device, weight.dtype),
        return_dict=option("return_dict"),
    )


# Exactly these module types may sit inside the encoder for the fused path, which reads
# their parameters and skips their forward (and so any hook or wrapper on them).
_PLAIN_TYPES = (nn.Embedding, nn.LayerNorm, nn.Linear, nn.ModuleList)


def _plain_layers(encoder, hf_xlm):
    """Whether the fused path computes what the encoder's submodules would: transformers'
    own attention and FFN modules and plain torch layers, without hooks or wrapped
    forwards, every attention with the full set of heads, every FFN with the activation
    that config.gelu_activation names (the one the kernels apply)."""
    from transformers.activations import GELUActivation

    plain = _PLAIN_TYPES + (GELUActivation, hf_xlm.MultiHeadAttention, hf_xlm.TransformerFFN)
    gelu = encoder.config.gelu_activation
    for module in encoder.modules():
        if module is encoder:
            continue
        if type(module) not in plain or module._forward_hooks or module._forward_pre_hooks or "forward" in vars(module):
            return False
        if type(module) is hf_xlm.TransformerFFN and not (
                type(module.act) is GELUActivation and module.act.act is nn.functional.gelu if gelu
                else module.act is nn.functional.relu):
            return False  # exact GELU (erf) or ReLU: what the kernels compute
        if type(module) is hf_xlm.MultiHeadAttention and (module.n_heads != encoder.n_heads
                                                          or module.q_lin.out_features != encoder.dim):
            return False  # pruned heads (transformers 4.x prune_heads)
    return True


# ---- patching -------------------------------------------------------------------------
def _is_routed(method):
    return isinstance(method, types.MethodType) and method.__func__ is _routed_forward()


def apply_to_transformers(model=None):
    """Routes transformers XLM models through xlm_fast's backend: the fused Triton path
    where it covers the call (CUDA tensors, or XLM_FAST_BACKEND=triton under
    TRITON_INTERPRET=1), transformers' own forward otherwise (bit-identical outputs).

    model: a transformers XLMModel or XLM head model (XLMWithLMHeadModel,
    XLMForSequenceClassification, ...). Its encoder (model.transformer, or the model
    itself) gets the routed forward as an instance attribute; other models are
    untouched. Returns the same object, still the transformers model it was, so
    Trainer, pipelines, generate, PEFT and save_pretrained keep working; nothing of the
    patch is saved. Without `model`, transformers' XLMModel class itself is routed, so
    every transformers XLM model, loaded before or after, takes the route; returns None.
    Applying twice changes nothing; `xlm_fast.integrations.transformers.revert(model)`
    (or `revert()` for the class) undoes it.
    """
    hf_xlm = _transformers_xlm()
    routed = _routed_forward()
    if model is None:
        hf_xlm.XLMModel.forward = routed
        return None
    encoder = _encoder_of(model, hf_xlm)
    if type(encoder).forward not in (routed, routed.__wrapped__):
        raise TypeError(f"model: {type(encoder).__name__} overrides transformers' XLMModel.forward, which "
                        "apply_to_transformers cannot route")
    if not _is_routed(vars(encoder).get("forward")):
        encoder.forward = types.MethodType(routed, encoder)
    return model


def revert(model=None):
    """Undoes apply_to_transformers(model) (the instance's routed forward) or, without
    `model`, apply_to_transformers() (the class's). An instance stays routed while the
    class is. Returns `model`."""
    hf_xlm = _transformers_xlm()
    routed = _routed_forward()
    if model is None:
        if vars(hf_xlm.XLMModel).get("forward") is routed:
            hf_xlm.XLMModel.forward = routed.__wrapped__
        return None
    encoder = _encoder_of(model, hf_xlm)
    if _is_routed(vars(encoder).get("forward")):
        del encoder.forward
    return model


# ---- conversion -----------------------------------------------------------------------
def _copy_into(target, source):
    """target: a freshly built model of the other library; takes source's weights,
    dtype, device and training mode."""
    target.to(device=source.device, dtype=source.dtype)
    state = source.state_dict()  # the same parameter names in both libraries
    result = target.load_state_dict(state, strict=False)
    # xlm_fast's state dict leaves out a tied copy (pred_layer.proj.weight, which is the
    # input embeddings): a key may be missing only when its parameter was loaded by another name
    parameters = dict(target.named_parameters(remove_duplicate=False))
    loaded = {id(parameters[key]) for key in state if key in parameters}
    missing = [key for key in result.missing_keys if id(parameters.get(key)) not in loaded]
    if missing or result.unexpected_keys:
        raise ValueError(f"model: its weights do not fit a {type(target).__name__} of its config (missing "
                         f"{missing}, unexpected {result.unexpected_keys})")
    target.train(source.training)
    return target


def _xlm_class_name(model, module, library):
    """The class name of `model`, which must be one of `module`'s XLM classes."""
    name = type(model).__name__
    if name not in CLASS_NAMES or not isinstance(model, getattr(module, name)):
        raise TypeError(f"model must be {library} XLM model ({', '.join(CLASS_NAMES)}), got "
                        f"{type(model).__module__}.{name}")
    return name


def from_transformers(model):
    """The xlm_fast model equivalent to a transformers XLM model: the same class name,
    config (through its dict), weights, dtype, device and training mode."""
    name = _xlm_class_name(model, _transformers_xlm(), "a transformers")
    return _copy_into(getattr(modeling_xlm, name)(XLMConfig.from_dict(model.config.to_dict())), model)


def to_transformers(model):
    """The transformers model equivalent to an xlm_fast XLM model: the same class name,
    config (through its dict), weights, dtype, device and training mode."""
    hf_xlm = _transformers_xlm()
    name = _xlm_class_name(model, modeling_xlm, "an xlm_fast")
    config = dict(model.config.to_dict(), _name_or_path=model.config.name_or_path)  # to_dict leaves it out
    return _copy_into(getattr(hf_xlm, name)(hf_xlm.XLMConfig.from_dict(config)), model)
