"""Every XLM module and head with transformers' module and parameter names, so that
checkpoints move both ways unchanged. This is the PyTorch path and the reference the
Triton kernels are checked against; `backend.select_backend` decides per call which
path the encoder takes."""

import math
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from torch.nn import functional as F

from . import backend, fused_encoder
from .configuration_xlm import XLMConfig
from .generation import GenerationMixin
from .labels import IGNORE_INDEX, check_class_id_values, check_class_ids, check_float_targets
from .modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    XLMForQuestionAnsweringOutput,
    XLMSquadHeadOutput,
)
from .modeling_utils import XLMPreTrainedModel


def sinusoidal_position_table(n_pos, dim):
    """(n_pos, dim) sin on even columns, cos on odd ones, computed in float64."""
    positions = np.arange(n_pos)[:, None]
    rates = np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None, :]
    angles = positions / rates
    table = np.empty((n_pos, dim))
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)


def xlm_masks(slen, lengths, causal, padding_mask=None):
    """Row mask (batch, slen) and attention mask: the row mask itself (keys), or with
    causal=True the (batch, slen, slen) lower triangle alone."""
    positions = torch.arange(slen, dtype=torch.long, device=lengths.device)
    mask = padding_mask if padding_mask is not None else positions < lengths[:, None]
    if causal:
        attn_mask = (positions[None, :] <= positions[:, None]).expand(lengths.size(0), slen, slen)
    else:
        attn_mask = mask
    return mask, attn_mask


# nn.Embedding takes these index dtypes; lengths only compare, so any integer dtype does.
EMBEDDING_INDEX_DTYPES = (torch.int64, torch.int32)
INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_value_ranges(ranges):
    """ranges: (name, integer tensor, low, high) tuples; raises a ValueError naming the
    first tensor with a value outside [low, high]. One device sync for all of them."""
    ranges = [spec for spec in ranges if spec[1].numel()]
    if not ranges:
        return
    bounds = torch.stack([torch.stack(torch.aminmax(tensor)).long() for _, tensor, _, _ in ranges]).tolist()
    for (name, _, low, high), (smallest, largest) in zip(ranges, bounds):
        if smallest < low or largest > high:
            raise ValueError(f"{name} values must lie in [{low}, {high}], got values in [{smallest}, {largest}]")


def check_device(name, tensor, device):
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device}, expected {device} (the model's and the inputs' device)")


def check_flag(name, value):
    """output_attentions, output_hidden_states, return_dict: "no" would be truthy."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None, got {value!r}")


def expand_head_mask(head_mask, n_layers, n_heads, device):
    """(n_heads,) or (n_layers, n_heads) -> (n_layers, n_heads), or None."""
    if head_mask is None:
        return None
    if not torch.is_tensor(head_mask):
        raise TypeError(f"head_mask must be a tensor, got {type(head_mask).__name__}")
    check_device("head_mask", head_mask, device)
    if head_mask.shape == (n_heads,):
        return head_mask[None, :].expand(n_layers, n_heads)
    if head_mask.shape == (n_layers, n_heads):
        return head_mask
    raise ValueError(
        f"head_mask must have shape ({n_heads},) or ({n_layers}, {n_heads}), got {tuple(head_mask.shape)}"
    )


def select_linear(linear, index, dim):
    """A new nn.Linear holding the rows (dim=0: outputs, with their bias) or the columns
    (dim=1: inputs) `index` of `linear`'s weight; dtype, device and requires_grad kept."""
    weight = linear.weight.detach().index_select(dim, index)
    bias = linear.bias.detach()
    bias = bias.index_select(0, index) if dim == 0 else bias.clone()
    with warnings.catch_warnings():  # torch warns that a layer left with no head has nothing to initialise
        warnings.simplefilter("ignore", UserWarning)
        new = nn.utils.skip_init(nn.Linear, weight.size(1), weight.size(0), device=weight.device, dtype=weight.dtype)
    new.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    new.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    # a layer pruned before post_init is still initialised there, one pruned later is not
    new._xlm_fast_initialized = getattr(linear, "_xlm_fast_initialized", False)
    return new


class MultiHeadAttention(nn.Module):
    def __init__(self, n_heads, dim, config, layer_idx=0):
        super().__init__()
        self.layer_id = layer_idx
        self.dim = dim
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.dropout = config.attention_dropout
        self.q_lin = nn.Linear(dim, dim)
        self.k_lin = nn.Linear(dim, dim)
        self.v_lin = nn.Linear(dim, dim)
        self.out_lin = nn.Linear(dim, dim)
        # The original indices (of config.n_heads) of the heads this layer still has, in
        # order, and of those prune_heads removed.
        self.kept_heads = list(range(n_heads))
        self.pruned_heads = set()

    def prune_heads(self, heads):
        """Removes `heads` (indices among the original config.n_heads; ones already
        pruned are skipped) from q/k/v's outputs and out_lin's inputs. Every head may go:
        the attention output is then out_lin's bias."""
        heads = set(heads) - self.pruned_heads
        if not heads:
            return
        positions = [position for position, head in enumerate(self.kept_heads) if head not in heads]
        device = self.q_lin.weight.device
        index = (torch.arange(self.head_dim, device=device)[None, :]
                 + self.head_dim * torch.tensor(positions, dtype=torch.long, device=device)[:, None]).reshape(-1)
        self.q_lin = select_linear(self.q_lin, index, 0)
        self.k_lin = select_linear(self.k_lin, index, 0)
        self.v_lin = select_linear(self.v_lin, index, 0)
        self.out_lin = select_linear(self.out_lin, index, 1)
        self.kept_heads = [self.kept_heads[position] for position in positions]
        self.n_heads = len(self.kept_heads)
        self.dim = self.n_heads * self.head_dim
        self.pruned_heads |= heads

    def forward(self, input, mask, cache=None, head_mask=None, output_attentions=False):
        """input (bs, qlen, emb_dim); mask (bs, klen) or (bs, qlen, klen), nonzero = attend;
        cache: the decoding dict, whose entry for this layer holds the keys and values
        (bs, n_heads, klen - qlen, head_dim) of earlier positions; head_mask (n_heads,)
        for this layer's remaining heads."""
        bs, qlen, _ = input.size()
        # explicit sizes: a layer whose heads were all pruned has n_heads == 0
        heads = lambda x: x.view(bs, qlen, self.n_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q = heads(self.q_lin(input))
        k = heads(self.k_lin(input))
        v = heads(self.v_lin(input))
        if cache is not None:
            if self.layer_id in cache:
                k_past, v_past = cache[self.layer_id]  # shapes checked by XLMModel._check_cache
                k = torch.cat([k_past, k], dim=2)
                v = torch.cat([v_past, v], dim=2)
            cache[self.layer_id] = (k, v)
        klen = k.size(2)
        q = q / math.sqrt(self.head_dim)
        scores = torch.matmul(q, k.transpose(2, 3))  # (bs, n_heads, qlen, klen)
        mask_shape = (bs, 1, qlen, klen) if mask.dim() == 3 else (bs, 1, 1, klen)
        scores = scores.masked_fill((mask == 0).view(mask_shape), torch.finfo(scores.dtype).min)
        weights = F.softmax(scores.float(), dim=-1).type_as(scores)
        weights = F.dropout(weights, p=self.dropout, training=self.training)
        if head_mask is not None:
            weights = weights * head_mask.view(1, -1, 1, 1).to(weights.dtype)
        context = torch.matmul(weights, v).transpose(1, 2).reshape(bs, qlen, self.n_heads * self.head_dim)
        output = self.out_lin(context)
        return (output, weights) if output_attentions else (output,)


class TransformerFFN(nn.Module):
    def __init__(self, in_dim, dim_hidden, out_dim, config):
        super().__init__()
        self.dropout = config.dropout
        self.lin1 = nn.Linear(in_dim, dim_hidden)
        self.lin2 = nn.Linear(dim_hidden, out_dim)
        self.act = F.gelu if config.gelu_activation else F.relu
        self.chunk_size_feed_forward = config.chunk_size_feed_forward

    def forward(self, input):
        # Chunking along the sequence only bounds memory; the result is the same.
        chunk = self.chunk_size_feed_forward
        if chunk and input.size(1) > chunk:
            return torch.cat([self.ff_chunk(part) for part in input.split(chunk, dim=1)], dim=1)
        return self.ff_chunk(input)

    def ff_chunk(self, input):
        x = self.lin2(self.act(self.lin1(input)))
        return F.dropout(x, p=self.dropout, training=self.training)


class XLMModel(XLMPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        if not config.is_encoder:
            raise NotImplementedError("XLM can only be used as an encoder (config.is_encoder=True)")
        self.causal = config.causal
        self.n_langs = config.n_langs
        self.use_lang_emb = config.use_lang_emb
        self.n_words = config.n_words
        self.eos_index = config.eos_index
        self.pad_index = config.pad_index
        self.dim = config.emb_dim
        self.hidden_dim = self.dim * 4
        self.n_heads = config.n_heads
        self.n_layers = config.n_layers
        self.dropout = config.dropout
        self.attention_dropout = config.attention_dropout

        self.position_embeddings = nn.Embedding(config.max_position_embeddings, self.dim)
        if config.n_langs > 1 and config.use_lang_emb:
            self.lang_embeddings = nn.Embedding(self.n_langs, self.dim)
        self.embeddings = nn.Embedding(self.n_words, self.dim, padding_idx=self.pad_index)
        self.layer_norm_emb = nn.LayerNorm(self.dim, eps=config.layer_norm_eps)
        self.attentions = nn.ModuleList()
        self.layer_norm1 = nn.ModuleList()
        self.ffns = nn.ModuleList()
        self.layer_norm2 = nn.ModuleList()
        for i in range(self.n_layers):
            self.attentions.append(MultiHeadAttention(self.n_heads, self.dim, config=config, layer_idx=i))
            self.layer_norm1.append(nn.LayerNorm(self.dim, eps=config.layer_norm_eps))
            self.ffns.append(TransformerFFN(self.dim, self.hidden_dim, self.dim, config=config))
            self.layer_norm2.append(nn.LayerNorm(self.dim, eps=config.layer_norm_eps))
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
        )
        # gradient_checkpointing_enable() sets these: the checkpoint function (torch.utils.
        # checkpoint with the user's options) and which layers use it (every n-th).
        self.gradient_checkpointing = False
        self._gradient_checkpointing_func = None
        self._checkpoint_every_n_layers = 1
        # A checkpoint saved after prune_heads lists them in config.pruned_heads (keys are
        # str after JSON): prune again, so that the weights' shapes match.
        pruned = getattr(config, "pruned_heads", None)
        if pruned:
            config.pruned_heads = {}
            self.prune_heads(pruned)
        self.post_init()

    def _prune_heads(self, heads_to_prune):
        """heads_to_prune: {layer: heads}, already checked by prune_heads."""
        for layer, heads in heads_to_prune.items():
            self.attentions[layer].prune_heads(heads)

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    @property
    def has_lang_embeddings(self):
        return self.n_langs > 1 and self.use_lang_emb

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        langs=None,
        token_type_ids=None,
        position_ids=None,
        lengths=None,
        cache=None,
        head_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        config = self.config
        for name, flag in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states),
                           ("return_dict", return_dict)):
            check_flag(name, flag)
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = config.return_dict if return_dict is None else return_dict

        bs, slen, device = self._check_inputs(input_ids, inputs_embeds)
        past = self._check_cache(cache, bs, slen, device)
        # (name, tensor, low, high): integer inputs whose values must lie in [low, high],
        # checked together below with one device synchronisation.
        ranges = [("input_ids", input_ids, 0, self.n_words - 1)] if input_ids is not None else []
        if lengths is None:
            if input_ids is not None and self.pad_index is not None:
                lengths = (input_ids != self.pad_index).sum(dim=1).long()
            else:  # embeddings, or no pad id: every position is a token
                lengths = torch.full((bs,), slen, device=device, dtype=torch.long)
        else:
            ranges.append(self._index_tensor("lengths", lengths, (bs,), 0, slen, device, INTEGER_DTYPES))
            lengths = lengths.long()  # the Triton path reads int64 lengths
        if attention_mask is not None:
            self._check_shape("attention_mask", attention_mask, (bs, slen), device)
        mask, attn_mask = xlm_masks(slen, lengths, self.causal, padding_mask=attention_mask)

        if position_ids is None:
            if slen > config.max_position_embeddings:
                raise ValueError(
                    f"{'input_ids' if input_ids is not None else 'inputs_embeds'}: sequence length {slen} exceeds "
                    f"max_position_embeddings ({config.max_position_embeddings})"
                )
            position_ids = self.position_ids[:, :slen]
        else:
            ranges.append(self._index_tensor("position_ids", position_ids, (bs, slen), 0,
                                             config.max_position_embeddings - 1, device))
        if langs is not None:
            ranges.append(self._index_tensor("langs", langs, (bs, slen), 0, self.n_langs - 1, device))
        if token_type_ids is not None:
            ranges.append(self._index_tensor("token_type_ids", token_type_ids, (bs, slen), 0, self.n_words - 1,
                                             device))
        check_value_ranges(ranges)
        head_mask = expand_head_mask(head_mask, self.n_layers, self.n_heads, device)
        if head_mask is not None and any(attention.pruned_heads for attention in self.attentions):
            # head_mask indexes the original heads; a pruned layer takes its remaining ones
            head_mask = [head_mask[i, attention.kept_heads] if attention.pruned_heads else head_mask[i]
                         for i, attention in enumerate(self.attentions)]

        if past:  # only the positions after the cached ones are computed
            new = slen - past
            input_ids = input_ids[:, -new:] if input_ids is not None else None
            inputs_embeds = inputs_embeds[:, -new:] if inputs_embeds is not None else None
            position_ids = position_ids[:, -new:]
            langs = langs[:, -new:] if langs is not None else None
            token_type_ids = token_type_ids[:, -new:] if token_type_ids is not None else None
            mask = mask[:, -new:]
            attn_mask = attn_mask[:, -new:]
        if not self.has_lang_embeddings:
            langs = None

        weight_dtype = self.embeddings.weight.dtype
        path = backend.select_backend(
            device,
            dtype=weight_dtype if inputs_embeds is None or inputs_embeds.dtype == weight_dtype else None,
            output_attentions=output_attentions,
            uses_cache=cache is not None,
            dropout=fused_encoder.largest_dropout(self),
            headless_layers=any(attention.n_heads == 0 for attention in self.attentions),
        )
        if path == "triton":
            tensor, hidden_states = fused_encoder.triton_encoder_forward(
                self,
                inputs=input_ids if input_ids is not None else inputs_embeds,
                position_ids=position_ids,
                langs=langs,
                token_type_ids=token_type_ids,
                padding_mask=mask,
                lengths=None if attention_mask is not None else lengths,
                head_mask=head_mask,
                output_hidden_states=output_hidden_states,
                compute_dtype=backend.compute_dtype(device, weight_dtype),
            )
            attentions = None
        else:
            tensor, hidden_states, attentions = self._torch_encoder_forward(
                input_ids, inputs_embeds, position_ids, langs, token_type_ids, mask, attn_mask,
                cache, head_mask, output_attentions, output_hidden_states,
            )
        if cache is not None:
            cache["slen"] = past + tensor.size(1)

        if not return_dict:
            return tuple(v for v in (tensor, hidden_states, attentions) if v is not None)
        return BaseModelOutput(last_hidden_state=tensor, hidden_states=hidden_states, attentions=attentions)

    def _torch_encoder_forward(self, input_ids, inputs_embeds, position_ids, langs, token_type_ids, mask,
                               attn_mask, cache, head_mask, output_attentions, output_hidden_states):
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        tensor = inputs_embeds + self.position_embeddings(position_ids).expand_as(inputs_embeds)
        if langs is not None:
            tensor = tensor + self.lang_embeddings(langs)
        if token_type_ids is not None:
            tensor = tensor + self.embeddings(token_type_ids)
        tensor = self.layer_norm_emb(tensor)
        tensor = F.dropout(tensor, p=self.dropout, training=self.training)
        row_mask = mask.unsqueeze(-1).to(tensor.dtype)
        tensor = tensor * row_mask

        hidden_states = () if output_hidden_states else None
        attentions = () if output_attentions else None
        # A decoding cache is filled inside the layers, so its calls are not recomputed.
        checkpointing = (self.gradient_checkpointing and self.training and torch.is_grad_enabled()
                         and cache is None)
        for i in range(self.n_layers):
            if output_hidden_states:
                hidden_states = hidden_states + (tensor,)
            layer_head_mask = None if head_mask is None else head_mask[i]
            if checkpointing and i % self._checkpoint_every_n_layers == 0:
                outputs = self._gradient_checkpointing_func(self._layer_forward, i, tensor, attn_mask, row_mask,
                                                            None, layer_head_mask, output_attentions)
            else:
                outputs = self._layer_forward(i, tensor, attn_mask, row_mask, cache, layer_head_mask,
                                              output_attentions)
            tensor = outputs[0]
            if output_attentions:
                attentions = attentions + (outputs[1],)
        if output_hidden_states:
            hidden_states = hidden_states + (tensor,)
        return tensor, hidden_states, attentions

    def _layer_forward(self, i, tensor, attn_mask, row_mask, cache, layer_head_mask, output_attentions):
        """Layer i of the PyTorch path (the unit gradient checkpointing recomputes):
        (bs, slen, dim) -> ((bs, slen, dim),) plus the attention weights when asked."""
        attn_outputs = self.attentions[i](tensor, attn_mask, cache=cache, head_mask=layer_head_mask,
                                          output_attentions=output_attentions)
        attn = F.dropout(attn_outputs[0], p=self.dropout, training=self.training)
        tensor = self.layer_norm1[i](tensor + attn)
        tensor = self.layer_norm2[i](tensor + self.ffns[i](tensor))
        return (tensor * row_mask,) + attn_outputs[1:]

    # ---- input checks: a clear error naming the argument, never a silent guess ----
    def _check_inputs(self, input_ids, inputs_embeds):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("exactly one of input_ids and inputs_embeds must be given")
        weight = self.embeddings.weight
        if input_ids is not None:
            if not torch.is_tensor(input_ids):
                raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}")
            if input_ids.size(0) == 0:
                raise ValueError("input_ids must hold at least one row, got an empty batch of shape "
                                 f"{tuple(input_ids.shape)}")
            self._index_tensor("input_ids", input_ids, tuple(input_ids.shape), 0, self.n_words - 1, weight.device)
            return input_ids.size(0), input_ids.size(1), input_ids.device
        if not torch.is_tensor(inputs_embeds) or not inputs_embeds.is_floating_point():
            raise TypeError("inputs_embeds must be a floating-point torch.Tensor")
        if inputs_embeds.dim() != 3 or inputs_embeds.size(-1) != self.dim or inputs_embeds.size(0) == 0:
            raise ValueError(
                f"inputs_embeds must have shape (batch >= 1, seq, {self.dim}), got {tuple(inputs_embeds.shape)}"
            )
        check_device("inputs_embeds", inputs_embeds, weight.device)
        # A dtype that promotes the weights' (float64 into float32, float32 into bfloat16)
        # reaches the LayerNorm with a dtype it refuses; autocast casts per op instead.
        if (torch.promote_types(inputs_embeds.dtype, weight.dtype) != weight.dtype
                and not torch.is_autocast_enabled(weight.device.type)):
            raise TypeError(f"inputs_embeds has dtype {inputs_embeds.dtype}, which the model's {weight.dtype} "
                            f"weights cannot take; pass inputs_embeds.to({weight.dtype})")
        return inputs_embeds.size(0), inputs_embeds.size(1), inputs_embeds.device

    @staticmethod
    def _check_shape(name, tensor, shape, device):
        if not torch.is_tensor(tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
        check_device(name, tensor, device)

    @classmethod
    def _index_tensor(cls, name, tensor, shape, low, high, device, dtypes=EMBEDDING_INDEX_DTYPES):
        """Checks that `tensor` is a tensor of `shape` and one of `dtypes` on `device`;
        returns its range spec for check_value_ranges."""
        cls._check_shape(name, tensor, shape, device)
        if tensor.dtype not in dtypes:
            raise TypeError(f"{name} must be an integer tensor of dtype {' or '.join(map(str, dtypes))}, "
                            f"got {tensor.dtype}")
        return name, tensor, low, high

    def _check_cache(self, cache, bs, slen, device):
        """Number of positions already in the decoding cache: a dict of "slen" and, once
        a forward has filled it, one (keys, values) entry per layer."""
        if cache is None:
            return 0
        if not isinstance(cache, dict):
            raise TypeError(f"cache must be a dict, got {type(cache).__name__}")
        past = cache.get("slen", 0)
        if not isinstance(past, int) or isinstance(past, bool) or past < 0 or past >= slen:
            raise ValueError(
                f"cache['slen'] must be an int in [0, {slen}) for an input of length {slen}, got {past!r}"
            )
        layers = set(cache) - {"slen"}
        if not layers <= set(range(self.n_layers)):
            raise ValueError(f"cache keys must be 'slen' and layer indices in [0, {self.n_layers}), got "
                             f"{sorted(layers - set(range(self.n_layers)), key=repr)}")
        if past and len(layers) != self.n_layers:
            # A layer without its past keys would attend to the new positions alone.
            raise ValueError(f"cache['slen'] is {past} but layers {sorted(set(range(self.n_layers)) - layers)} "
                             "have no cached keys and values")
        for layer in layers:
            entry = cache[layer]
            attention = self.attentions[layer]  # pruned layers cache fewer heads
            expected = (bs, attention.n_heads, past, attention.head_dim)
            if not (isinstance(entry, tuple) and len(entry) == 2
                    and all(torch.is_tensor(part) and part.shape == expected and part.device == device
                            for part in entry)):
                raise ValueError(
                    f"cache[{layer!r}] must be the layer's (keys, values) tensors of shape {expected} on {device}, "
                    f"as forward leaves them; got {type(entry).__name__}"
                    + (f" of shapes {[tuple(part.shape) for part in entry if torch.is_tensor(part)]}"
                       if isinstance(entry, tuple) else "")
                )
        return past


class XLMPredLayer(nn.Module):
    """Prediction layer: a linear projection with cross-entropy, or an adaptive softmax."""

    def __init__(self, config):
        super().__init__()
        self.asm = config.asm
        self.n_words = config.n_words
        self.pad_index = config.pad_index
        dim = config.emb_dim
        if not config.asm:
            self.proj = nn.Linear(dim, config.n_words, bias=True)
        else:
            self.proj = nn.AdaptiveLogSoftmaxWithLoss(
                in_features=dim,
                n_classes=config.n_words,
                cutoffs=list(config.asm_cutoffs),
                div_value=config.asm_div_value,
                head_bias=True,
            )

    def forward(self, x, y=None):
        """x (bs, slen, dim); y (bs, slen) labels or None. Returns (loss, scores) or (scores,)."""
        if not self.asm:
            scores = self.proj(x)
            if y is None:
                return (scores,)
            loss = F.cross_entropy(scores.view(-1, self.n_words), y.view(-1), reduction="mean")
            return (loss, scores)
        scores = self.proj.log_prob(x.reshape(-1, x.size(-1))).view(*x.shape[:-1], self.n_words)
        if y is None:
            return (scores,)
        _, loss = self.proj(x.reshape(-1, x.size(-1)), y.reshape(-1))
        return (loss, scores)


class XLMWithLMHeadModel(GenerationMixin, XLMPreTrainedModel):
    _tied_weights_keys = {"pred_layer.proj.weight": "transformer.embeddings.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.transformer = XLMModel(config)
        self.pred_layer = XLMPredLayer(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.pred_layer.proj

    def set_output_embeddings(self, new_embeddings):
        self.pred_layer.proj = new_embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        langs=None,
        token_type_ids=None,
        position_ids=None,
        lengths=None,
        cache=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, attention_mask=attention_mask, langs=langs, token_type_ids=token_type_ids,
            position_ids=position_ids, lengths=lengths, cache=cache, head_mask=head_mask,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict,
        )
        if labels is not None:
            labels = check_class_ids("labels", labels, [tuple(transformer_outputs[0].shape[:2])],
                                     "token ids, (batch, seq)")
            # The adaptive softmax has no ignored value.
            check_class_id_values(("labels", labels, self.config.vocab_size, None if self.config.asm else IGNORE_INDEX))
        outputs = self.pred_layer(transformer_outputs[0], labels)
        if not return_dict:
            return outputs + tuple(transformer_outputs[1:])
        return MaskedLMOutput(
            loss=outputs[0] if labels is not None else None,
            logits=outputs[-1],
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )


# transformers' activation names (configuration_xlm.SUMMARY_ACTIVATIONS) -> module factory.
SUMMARY_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "silu": nn.SiLU,
                       "swish": nn.SiLU, "linear": nn.Identity}


class XLMSequenceSummary(nn.Module):
    """One vector per sequence: the first/last/mean token or the token at cls_index,
    then optional projection, activation and dropouts (config.summary_*)."""

    def __init__(self, config):
        super().__init__()
        self.summary_type = config.summary_type
        if self.summary_type == "attn":
            raise NotImplementedError("summary_type='attn' is not implemented (as in transformers)")
        self.summary = nn.Identity()
        if config.summary_use_proj:
            if config.summary_proj_to_labels and config.num_labels > 0:
                num_classes = config.num_labels
            else:
                num_classes = config.hidden_size
            self.summary = nn.Linear(config.hidden_size, num_classes)
        self.activation = SUMMARY_ACTIVATIONS[config.summary_activation or "linear"]()
        first_dropout = getattr(config, "summary_first_dropout", 0)
        last_dropout = getattr(config, "summary_last_dropout", 0)
        self.first_dropout = nn.Dropout(first_dropout) if first_dropout and first_dropout > 0 else nn.Identity()
        self.last_dropout = nn.Dropout(last_dropout) if last_dropout and last_dropout > 0 else nn.Identity()

    def forward(self, hidden_states, cls_index=None):
        """hidden_states (bs, slen, dim); cls_index (bs,) for summary_type='cls_index'."""
        if self.summary_type == "last":
            output = hidden_states[:, -1]
        elif self.summary_type == "first":
            output = hidden_states[:, 0]
        elif self.summary_type == "mean":
            output = hidden_states.mean(dim=1)
        else:  # cls_index; the last token when none is given
            if cls_index is None:
                cls_index = torch.full_like(hidden_states[..., :1, :], hidden_states.shape[-2] - 1, dtype=torch.long)
            else:
                cls_index = cls_index[..., None, None]
                cls_index = cls_index.expand((-1,) * (cls_index.dim() - 1) + (hidden_states.size(-1),))
            output = hidden_states.gather(-2, cls_index).squeeze(-2)
        output = self.first_dropout(output)
        output = self.summary(output)
        output = self.activation(output)
        return self.last_dropout(output)


def sequence_classification_loss(config, logits, labels):
    """MSE, cross-entropy or BCE-with-logits by config.problem_type, which is inferred
    (and stored) from num_labels and the labels' dtype when unset, as transformers does."""
    num_labels = config.num_labels
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    batch = logits.shape[0]
    if config.problem_type == "regression":
        shapes = [(batch,), (batch, 1)] if num_labels == 1 else [(batch, num_labels)]
        labels = check_float_targets("labels", labels, shapes, "regression targets")
        if num_labels == 1:
            return MSELoss()(logits.squeeze(), labels.squeeze())
        return MSELoss()(logits, labels)
    if config.problem_type == "single_label_classification":
        labels = check_class_ids("labels", labels, [(batch,), (batch, 1)], "class ids, one per row")
        check_class_id_values(("labels", labels, num_labels, IGNORE_INDEX))
        return CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))
    labels = check_float_targets("labels", labels, [(batch, num_labels)],
                                 "multi-label targets: problem_type is 'multi_label_classification', set or inferred "
                                 "from labels that are not int64/int32")
    return BCEWithLogitsLoss()(logits, labels)


def check_has_tokens(head, input_ids, hidden):
    """Heads that pool or rank the tokens of a sequence need at least one."""
    if hidden.size(1) == 0:
        name = "input_ids" if input_ids is not None else "inputs_embeds"
        raise ValueError(f"{name}: {head} needs at least one token per sequence, got sequences of length 0")


class XLMForSequenceClassification(XLMPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = XLMModel(config)
        self.sequence_summary = XLMSequenceSummary(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        langs=None,
        token_type_ids=None,
        position_ids=None,
        lengths=None,
        cache=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, attention_mask=attention_mask, langs=langs, token_type_ids=token_type_ids,
            position_ids=position_ids, lengths=lengths, cache=cache, head_mask=head_mask,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict,
        )
        check_has_tokens("XLMForSequenceClassification", input_ids, transformer_outputs[0])
        logits = self.sequence_summary(transformer_outputs[0])
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        if not return_dict:
            output = (logits,) + tuple(transformer_outputs[1:])
            return output if loss is None else (loss,) + output
        return SequenceClassifierOutput(
            loss=loss, logits=logits,
            hidden_states=transformer_outputs.hidden_states, attentions=transformer_outputs.attentions,
        )


def check_answer_positions(start_positions, end_positions, batch):
    """Both or neither (one alone would silently give no loss); each (batch,) or
    (batch, 1) integers, returned as (batch,) int64."""
    if (start_positions is None) != (end_positions is None):
        raise ValueError("start_positions and end_positions must be given together (both for a loss, "
                         f"neither for inference), got only {'start' if end_positions is None else 'end'}_positions")
    if start_positions is None:
        return None, None
    return tuple(check_class_ids(name, positions, [(batch,), (batch, 1)], "token positions, one per row").reshape(batch)
                 for name, positions in (("start_positions", start_positions), ("end_positions", end_positions)))


class XLMForQuestionAnsweringSimple(XLMPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        if config.num_labels != 2:  # the two outputs are the start and end logits
            raise ValueError(f"XLMForQuestionAnsweringSimple needs config.num_labels == 2, got {config.num_labels}")
        self.transformer = XLMModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        langs=None,
        token_type_ids=None,
        position_ids=None,
        lengths=None,
        cache=None,
        head_mask=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, attention_mask=attention_mask, langs=langs, token_type_ids=token_type_ids,
            position_ids=position_ids, lengths=lengths, cache=cache, head_mask=head_mask,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict,
        )
        logits = self.qa_outputs(transformer_outputs[0])
        start_logits, end_logits = logits.split(1, dim=-1)
        start_logits = start_logits.squeeze(-1).contiguous()
        end_logits = end_logits.squeeze(-1).contiguous()

        total_loss = None
        start_positions, end_positions = check_answer_positions(start_positions, end_positions, start_logits.shape[0])
        if start_positions is not None:
            # Positions outside the sequence (negative ones included) are clamped, as in
            # transformers: beyond the end they become one ignored index.
            ignored_index = start_logits.size(1)
            start_positions = start_positions.clamp(0, ignored_index)
            end_positions = end_positions.clamp(0, ignored_index)
            loss_fct = CrossEntropyLoss(ignore_index=ignored_index)
            total_loss = (loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)) / 2

        if not return_dict:
            output = (start_logits, end_logits) + tuple(transformer_outputs[1:])
            return output if total_loss is None else (total_loss,) + output
        return QuestionAnsweringModelOutput(
            loss=total_loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=transformer_outputs.hidden_states, attentions=transformer_outputs.attentions,
        )


def mask_invalid_positions(logits, p_mask):
    """Pushes logits where p_mask is 1 to a large negative value (fp16-safe)."""
    if p_mask is None:
        return logits
    big = 65500 if p_mask.dtype == torch.float16 else 1e30
    return logits * (1 - p_mask) - big * p_mask


class XLMPoolerStartLogits(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states, p_mask=None):
        """hidden_states (bs, slen, dim) -> start logits (bs, slen)."""
        return mask_invalid_positions(self.dense(hidden_states).squeeze(-1), p_mask)


def gather_positions(hidden_states, positions):
    """hidden_states (bs, slen, dim), positions (bs,) -> (bs, 1, dim)."""
    index = positions[:, None, None].expand(-1, -1, hidden_states.size(-1))
    return hidden_states.gather(-2, index)


class XLMPoolerEndLogits(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense_0 = nn.Linear(config.hidden_size * 2, config.hidden_size)
        self.activation = nn.Tanh()
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense_1 = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states, start_states=None, start_positions=None, p_mask=None):
        """End logits (bs, slen[, n_top]) given the start token's states or positions
        (start_positions wins when both are given)."""
        if start_states is None and start_positions is None:
            raise ValueError("one of start_states and start_positions must be given")
        if start_positions is not None:
            start_states = gather_positions(hidden_states, start_positions).expand(-1, hidden_states.size(-2), -1)
        x = self.dense_0(torch.cat([hidden_states, start_states], dim=-1))
        x = self.LayerNorm(self.activation(x))
        return mask_invalid_positions(self.dense_1(x).squeeze(-1), p_mask)


class XLMPoolerAnswerClass(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense_0 = nn.Linear(config.hidden_size * 2, config.hidden_size)
        self.activation = nn.Tanh()
        self.dense_1 = nn.Linear(config.hidden_size, 1, bias=False)

    def forward(self, hidden_states, start_states=None, start_positions=None, cls_index=None):
        """SQuAD 2.0 answerability logit (bs,) from the start token's and the CLS token's
        states (the last token when cls_index is None)."""
        if start_states is None and start_positions is None:
            raise ValueError("one of start_states and start_positions must be given")
        if start_positions is not None:
            start_states = gather_positions(hidden_states, start_positions).squeeze(-2)
        if cls_index is not None:
            cls_token_state = gather_positions(hidden_states, cls_index).squeeze(-2)
        else:
            cls_token_state = hidden_states[:, -1, :]
        x = self.activation(self.dense_0(torch.cat([start_states, cls_token_state], dim=-1)))
        return self.dense_1(x).squeeze(-1)


def check_p_mask(p_mask, batch, seq, device):
    if not torch.is_tensor(p_mask):
        raise TypeError(f"p_mask must be a torch.Tensor, got {type(p_mask).__name__}")
    if p_mask.dtype == torch.bool or p_mask.is_complex():  # 1 - p_mask needs numbers
        raise TypeError(f"p_mask must be a float or integer tensor of 0/1 (1: not in the answer), got {p_mask.dtype}")
    if tuple(p_mask.shape) != (batch, seq):
        raise ValueError(f"p_mask must have shape {(batch, seq)}, got {tuple(p_mask.shape)}")
    check_device("p_mask", p_mask, device)


def check_is_impossible(is_impossible, cls_index, batch):
    """is_impossible (batch,) or (batch, 1) of 0/1 (any real dtype) -> (batch,)."""
    if cls_index is None:  # transformers would silently leave out the answerability loss
        raise ValueError("is_impossible needs cls_index (the CLS token's position) for the answerability loss")
    if not torch.is_tensor(is_impossible) or is_impossible.is_complex():
        raise TypeError(f"is_impossible must be a real torch.Tensor of 0/1, got {is_impossible!r}")
    if tuple(is_impossible.shape) not in ((batch,), (batch, 1)):
        raise ValueError(f"is_impossible must have shape ({batch},) or ({batch}, 1), got {tuple(is_impossible.shape)}")
    return is_impossible.reshape(batch)


class XLMSQuADHead(nn.Module):
    """Beam-search SQuAD head: the loss when start and end positions are given, else the
    top start_n_top starts, for each the top end_n_top ends, and the answer-class logit."""

    def __init__(self, config):
        super().__init__()
        self.start_n_top = config.start_n_top
        self.end_n_top = config.end_n_top
        self.start_logits = XLMPoolerStartLogits(config)
        self.end_logits = XLMPoolerEndLogits(config)
        self.answer_class = XLMPoolerAnswerClass(config)

    def forward(self, hidden_states, start_positions=None, end_positions=None, cls_index=None,
                is_impossible=None, p_mask=None, return_dict=False):
        batch, seq = hidden_states.shape[:2]
        if p_mask is not None:
            check_p_mask(p_mask, batch, seq, hidden_states.device)
        start_positions, end_positions = check_answer_positions(start_positions, end_positions, batch)
        if cls_index is not None:
            cls_index = check_class_ids("cls_index", cls_index, [(batch,), (batch, 1)],
                                        "the CLS token's position, one per row").reshape(batch)
        start_logits = self.start_logits(hidden_states, p_mask=p_mask)

        if start_positions is not None:
            if is_impossible is not None:
                is_impossible = check_is_impossible(is_impossible, cls_index, batch)
            # Unlike the simple head, transformers does not clamp these: start_positions and
            # cls_index pick hidden states, so out of range is an error; end_positions only
            # meet the loss, which ignores -100.
            check_class_id_values(("start_positions", start_positions, seq, None),
                                  ("end_positions", end_positions, seq, IGNORE_INDEX),
                                  *([("cls_index", cls_index, seq, None)] if cls_index is not None else []))
            end_logits = self.end_logits(hidden_states, start_positions=start_positions, p_mask=p_mask)
            loss_fct = CrossEntropyLoss()
            total_loss = (loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)) / 2
            if cls_index is not None and is_impossible is not None:
                cls_logits = self.answer_class(hidden_states, start_positions=start_positions, cls_index=cls_index)
                total_loss = total_loss + BCEWithLogitsLoss()(cls_logits, is_impossible.to(cls_logits.dtype)) * 0.5
            return XLMSquadHeadOutput(loss=total_loss) if return_dict else (total_loss,)

        for name, top in (("start_n_top", self.start_n_top), ("end_n_top", self.end_n_top)):
            if top > seq:
                raise ValueError(f"config.{name} ({top}) exceeds the sequence length ({seq}): the head ranks the "
                                 f"top {name} positions of each sequence")
        if cls_index is not None:
            check_class_id_values(("cls_index", cls_index, seq, None))
        bsz, slen, hsz = hidden_states.size()
        start_log_probs = F.softmax(start_logits, dim=-1)  # (bsz, slen)
        start_top_log_probs, start_top_index = torch.topk(start_log_probs, self.start_n_top, dim=-1)
        start_states = torch.gather(hidden_states, -2, start_top_index[..., None].expand(-1, -1, hsz))
        start_states = start_states[:, None].expand(-1, slen, -1, -1)  # (bsz, slen, start_n_top, hsz)
        hidden_states_expanded = hidden_states[:, :, None].expand_as(start_states)
        end_p_mask = p_mask[..., None] if p_mask is not None else None
        end_logits = self.end_logits(hidden_states_expanded, start_states=start_states, p_mask=end_p_mask)
        end_log_probs = F.softmax(end_logits, dim=1)  # (bsz, slen, start_n_top)
        end_top_log_probs, end_top_index = torch.topk(end_log_probs, self.end_n_top, dim=1)
        end_top_log_probs = end_top_log_probs.reshape(-1, self.start_n_top * self.end_n_top)
        end_top_index = end_top_index.reshape(-1, self.start_n_top * self.end_n_top)

        # The answer class sees the start states averaged under the start distribution.
        start_states = torch.einsum("blh,bl->bh", hidden_states, start_log_probs)
        cls_logits = self.answer_class(hidden_states, start_states=start_states, cls_index=cls_index)
        outputs = (start_top_log_probs, start_top_index, end_top_log_probs, end_top_index, cls_logits)
        return XLMSquadHeadOutput(*(None,) + outputs) if return_dict else outputs


class XLMForQuestionAnswering(XLMPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.transformer = XLMModel(config)
        self.qa_outputs = XLMSQuADHead(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        langs=None,
        token_type_ids=None,
        position_ids=None,
        lengths=None,
        cache=None,
        head_mask=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        is_impossible=None,
        cls_index=None,
        p_mask=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        transformer_outputs = self.transformer(
            input_ids, attention_mask=attention_mask, langs=langs, token_type_ids=token_type_ids,
            position_ids=position_ids, lengths=lengths, cache=cache, head_mask=head_mask,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict,
        )
        check_has_tokens("XLMForQuestionAnswering", input_ids, transformer_outputs[0])
        outputs = self.qa_outputs(
            transformer_outputs[0], start_positions=start_positions, end_positions=end_positions,
            cls_index=cls_index, is_impossible=is_impossible, p_mask=p_mask, return_dict=return_dict,
        )
        if not return_dict:
            return tuple(outputs) + tuple(transformer_outputs[1:])
        return XLMForQuestionAnsweringOutput(
            loss=outputs.loss,
            start_top_log_probs=outputs.start_top_log_probs,
            start_top_index=outputs.start_top_index,
            end_top_log_probs=outputs.end_top_log_probs,
            end_top_index=outputs.end_top_index,
            cls_logits=outputs.cls_logits,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )


class XLMForTokenClassification(XLMPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = XLMModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        langs=None,
        token_type_ids=None,
        position_ids=None,
        lengths=None,
        cache=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.transformer(
            input_ids, attention_mask=attention_mask, langs=langs, token_type_ids=token_type_ids,
            position_ids=position_ids, lengths=lengths, cache=cache, head_mask=head_mask,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict,
        )
        logits = self.classifier(self.dropout(outputs[0]))
        loss = None
        if labels is not None:
            labels = check_class_ids("labels", labels, [tuple(logits.shape[:2])], "class ids, one per token")
            check_class_id_values(("labels", labels, self.num_labels, IGNORE_INDEX))
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        if not return_dict:
            output = (logits,) + tuple(outputs[1:])
            return output if loss is None else (loss,) + output
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )


class XLMForMultipleChoice(XLMPreTrainedModel):
    def __init__(self, config, *inputs, **kwargs):
        super().__init__(config)
        self.transformer = XLMModel(config)
        self.sequence_summary = XLMSequenceSummary(config)
        self.logits_proj = nn.Linear(config.num_labels, 1)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        langs=None,
        token_type_ids=None,
        position_ids=None,
        lengths=None,
        cache=None,
        head_mask=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """Inputs of shape (batch, num_choices, seq[, dim]) are flattened to
        (batch * num_choices, seq[, dim]) for the transformer."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if lengths is not None:
            raise ValueError(
                "lengths cannot be used with XLMForMultipleChoice; pass attention_mask instead"
            )
        primary = input_ids if input_ids is not None else inputs_embeds
        if primary is None:
            raise ValueError("exactly one of input_ids and inputs_embeds must be given")
        name = "input_ids" if input_ids is not None else "inputs_embeds"
        if not torch.is_tensor(primary):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(primary).__name__}")
        expected = 3 if input_ids is not None else 4
        if primary.dim() != expected:
            raise ValueError(f"{name} must have {expected} dimensions (batch, num_choices, ...), got {primary.dim()}")
        batch, num_choices, seq = primary.shape[:3]
        if 0 in (batch, num_choices, seq):
            raise ValueError(f"{name} must hold at least one row, one choice and one token, got shape "
                             f"{tuple(primary.shape)}")
        # Flattening would let a wrong shape with the right number of values through.
        for aux_name, aux in (("attention_mask", attention_mask), ("langs", langs),
                              ("token_type_ids", token_type_ids), ("position_ids", position_ids)):
            if aux is not None and (not torch.is_tensor(aux) or tuple(aux.shape) != (batch, num_choices, seq)):
                raise ValueError(f"{aux_name} must be a tensor of shape {(batch, num_choices, seq)} like {name}, got "
                                 f"{tuple(aux.shape) if torch.is_tensor(aux) else type(aux).__name__}")
        flat = lambda x: x.reshape(-1, x.size(-1)) if x is not None else None  # noqa: E731
        transformer_outputs = self.transformer(
            input_ids=flat(input_ids),
            attention_mask=flat(attention_mask),
            langs=flat(langs),
            token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
            cache=cache,
            head_mask=head_mask,
            inputs_embeds=inputs_embeds.reshape(-1, inputs_embeds.size(-2), inputs_embeds.size(-1))
            if inputs_embeds is not None
            else None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )
        logits = self.logits_proj(self.sequence_summary(transformer_outputs[0]))
        reshaped_logits = logits.view(-1, num_choices)
        loss = None
        if labels is not None:
            labels = check_class_ids("labels", labels, [(batch,)], "the index of the right choice, one per row")
            check_class_id_values(("labels", labels, num_choices, IGNORE_INDEX))
            loss = CrossEntropyLoss()(reshaped_logits, labels)
        if not return_dict:
            output = (reshaped_logits,) + tuple(transformer_outputs[1:])
            return output if loss is None else (loss,) + output
        return MultipleChoiceModelOutput(
            loss=loss, logits=reshaped_logits,
            hidden_states=transformer_outputs.hidden_states, attentions=transformer_outputs.attentions,
        )


__all__ = [
    "XLMConfig",
    "XLMForMultipleChoice",
    "XLMForQuestionAnswering",
    "XLMForQuestionAnsweringSimple",
    "XLMForSequenceClassification",
    "XLMForTokenClassification",
    "XLMModel",
    "XLMPreTrainedModel",
    "XLMWithLMHeadModel",
    "sinusoidal_position_table",
]
