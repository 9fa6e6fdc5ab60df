"""XLMPreTrainedModel: weight initialisation and tying, checkpoints in transformers'
format (from_pretrained / save_pretrained, sharded or not, with no download or upload),
and the generic methods of transformers' PreTrainedModel (num_parameters,
resize_token_embeddings, prune_heads, gradient checkpointing)."""

import functools
import json
import logging
import os
import pickle
import re
from collections.abc import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file as save_safetensors
from torch import nn

from .configuration_xlm import XLMConfig, torch_dtype_from_name
from .hub import checked_path, resolve_model_dir

logger = logging.getLogger("xlm_fast")

SAFE_WEIGHTS_NAME = "model.safetensors"
WEIGHTS_NAME = "pytorch_model.bin"
INDEX_SUFFIX = ".index.json"
# Buffers that older checkpoints saved and that are rebuilt at construction.
IGNORED_CHECKPOINT_SUFFIXES = ("position_ids",)
# huggingface_hub's decimal units for max_shard_size ("5GB" is 5 * 10**9 bytes).
SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
# What transformers accepts for attn_implementation on XLM; xlm_fast runs its own kernels.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
# save_pretrained's keyword arguments that only an upload would use (push_to_hub is refused).
HUB_UPLOAD_OPTIONS = ("token", "commit_message", "commit_description", "repo_id", "create_pr", "private",
                      "revision", "tags")
SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def is_state_dict(value):
    """Whether `value` maps parameter names to tensors."""
    return isinstance(value, dict) and all(isinstance(key, str) and torch.is_tensor(item)
                                           for key, item in value.items())


def check_state_dict_argument(state_dict):
    if not (is_state_dict(state_dict) or isinstance(state_dict, CheckpointTensors)):
        raise TypeError(f"state_dict must map parameter names to tensors, got {type(state_dict).__name__}")


def check_optional(name, value, types, expected):
    if value is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
        raise TypeError(f"{name} must be {expected} or None, got {value!r}")


def add_variant(weights_name, variant):
    """transformers' naming: model.safetensors -> model.<variant>.safetensors,
    model.safetensors.index.json -> model.safetensors.index.<variant>.json."""
    if variant is None:
        return weights_name
    stem, extension = weights_name.rsplit(".", 1)
    return f"{stem}.{variant}.{extension}"


def parse_shard_size(max_shard_size):
    """Bytes from an int, or from a string with huggingface_hub's decimal units
    ("5GB" = 5e9, "10MB", "500KB", "1.5GB")."""
    if isinstance(max_shard_size, int) and not isinstance(max_shard_size, bool):
        size = max_shard_size
    elif isinstance(max_shard_size, str):
        text = max_shard_size.strip()
        unit = text[-2:].upper()
        try:
            if unit not in SIZE_UNITS:
                raise ValueError(unit)
            size = int(float(text[:-2].strip()) * SIZE_UNITS[unit])
        except ValueError:
            raise ValueError(f"max_shard_size must be a number of bytes or a size such as '5GB', '10MB' or '500KB' "
                             f"(units KB, MB, GB, TB), got {max_shard_size!r}") from None
    else:
        raise TypeError(f"max_shard_size must be an int (bytes) or a str such as '5GB', got {max_shard_size!r}")
    if size <= 0:
        raise ValueError(f"max_shard_size must be positive, got {max_shard_size!r}")
    return size


# ---- reading checkpoints --------------------------------------------------------------
class CheckpointTensors(Mapping):
    """The tensors of a checkpoint's weight files, read one at a time.

    safetensors files are opened lazily (the header gives names and shapes; each lookup
    reads one tensor) and pytorch_model.bin files are memory-mapped, so loading copies
    each tensor into the model's parameter and drops it: no second copy of the weights
    is held in memory.
    """

    def __init__(self, files):
        self._files = {}  # name -> safetensors file holding it
        self._shapes, self._dtypes = {}, {}
        self._tensors = {}  # name -> memory-mapped tensor of a .bin file
        for path in files:  # a name in several shards: the last one wins, as in dict.update
            if path.endswith(".safetensors"):
                self._index_safetensors(path)
            else:
                self._map_bin(path)

    def _index_safetensors(self, path):
        try:
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():
                    view = handle.get_slice(name)
                    self._shapes[name] = torch.Size(view.get_shape())
                    self._dtypes[name] = SAFETENSORS_DTYPES.get(view.get_dtype())
                    self._files[name] = path
        except (SafetensorError, OSError, ValueError) as error:
            raise OSError(f"cannot read weights file {path}: {error}") from error

    def _map_bin(self, path):
        try:
            try:
                state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                # saved in torch's legacy (pre-zipfile) format, which cannot be mapped
                state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
            raise OSError(f"cannot read weights file {path}: {error}") from error
        if not is_state_dict(state_dict):
            raise OSError(f"weights file {path} must hold a state dict (parameter names to tensors), got "
                          f"{type(state_dict).__name__}")
        for name, tensor in state_dict.items():
            self._tensors[name] = tensor
            self._shapes[name] = tensor.shape
            self._dtypes[name] = tensor.dtype

    def __getitem__(self, name):
        if name in self._tensors:
            return self._tensors[name]
        path = self._files[name]
        try:
            with safe_open(path, framework="pt") as handle:
                return handle.get_tensor(name)
        except (SafetensorError, OSError) as error:
            raise OSError(f"cannot read tensor {name} of weights file {path}: {error}") from error

    def __iter__(self):
        return iter(self._shapes)

    def __len__(self):
        return len(self._shapes)

    def shape(self, name):
        return self._shapes[name]

    def dtype(self, name):
        return self._dtypes[name]


def _read_shard_index(index_file):
    """The shard file names that transformers' *.index.json lists in its weight_map."""
    try:
        with open(index_file, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OSError(f"cannot read shard index {index_file}: {error}") from error
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise OSError(f"shard index {index_file}: weight_map must map parameter names to shard file names")
    return sorted(set(weight_map.values()))


def checkpoint_files(model_dir, use_safetensors=None, variant=None):
    """The weight files of a checkpoint directory, chosen as transformers does: safetensors
    (one file, then a sharded index) unless use_safetensors=False, then pytorch_model.bin
    unless use_safetensors=True."""
    names = ([SAFE_WEIGHTS_NAME] if use_safetensors is not False else []) + ([WEIGHTS_NAME] if not use_safetensors
                                                                              else [])
    for weights_name in names:
        single = os.path.join(model_dir, add_variant(weights_name, variant))
        if os.path.isfile(single):
            return [single]
        index_file = os.path.join(model_dir, add_variant(weights_name + INDEX_SUFFIX, variant))
        if os.path.isfile(index_file):
            return [os.path.join(model_dir, shard) for shard in _read_shard_index(index_file)]
    wanted = " or ".join(add_variant(name, variant) for name in names)
    hint = ""
    if use_safetensors and os.path.isfile(os.path.join(model_dir, add_variant(WEIGHTS_NAME, variant))):
        hint = f" (it has {add_variant(WEIGHTS_NAME, variant)}: pass use_safetensors=False or None to read it)"
    raise OSError(f"{model_dir} holds no {wanted} (sharded or not){hint}")


def load_checkpoint_state_dict(model_dir, use_safetensors=None, variant=None):
    """The tensors of a checkpoint directory, read lazily (CheckpointTensors)."""
    return CheckpointTensors(checkpoint_files(model_dir, use_safetensors, variant))


def resolve_dtype(dtype, config, state_dict):
    """None -> float32; "auto" -> the config's or the checkpoint's dtype; str or torch.dtype."""
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        if config.dtype is not None:
            dtype = config.dtype
        else:
            dtypes = (state_dict.dtype(key) if isinstance(state_dict, CheckpointTensors) else state_dict[key].dtype
                      for key in state_dict)
            return next((d for d in dtypes if d is not None and d.is_floating_point), torch.float32)
    resolved = torch_dtype_from_name(dtype)
    if resolved is None:
        raise ValueError(f"dtype must be a floating-point torch.dtype (or its name), 'auto' or None, got {dtype!r}")
    return resolved


def _parse_device(value):
    """One device_map entry -> torch.device (an int is a CUDA device index, as in transformers)."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return torch.device("cuda", value)
        if isinstance(value, (str, torch.device)):
            return torch.device(value)
    except (RuntimeError, ValueError):
        pass
    raise ValueError(f"device_map: {value!r} is not a device (expected 'auto', 'cpu', 'cuda:0', an int CUDA index, "
                     "a torch.device, or a dict of these)")


def resolve_device_map(device_map):
    """The one device that device_map asks for, or None (stay on the CPU).

    "auto" is the first CUDA device when there is one, else the CPU; a dict may name
    several modules as long as they all go to one device: xlm_fast does not split a
    model over devices.
    """
    if device_map is None:
        return None
    if isinstance(device_map, str) and device_map == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if isinstance(device_map, dict):
        if not device_map:
            raise ValueError("device_map is an empty dict; pass {'': device} or a device")
        devices = {_parse_device(value) for value in device_map.values()}
        if len(devices) > 1:
            raise ValueError(f"device_map places modules on several devices {sorted(map(str, devices))}; xlm_fast "
                             "loads a model onto one device: pass one device, or {'': device}")
        device = devices.pop()
    else:
        device = _parse_device(device_map)
    if device.type == "meta":
        raise ValueError(f"device_map: {device_map!r}: xlm_fast loads the weights onto a real device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device_map: {device_map!r} names a CUDA device, but {torch.cuda.device_count()} are "
                         "available")
    return device


# ---- writing checkpoints --------------------------------------------------------------
def split_into_shards(state_dict, max_bytes):
    """Lists of names, in state-dict order, each list at most max_bytes (a tensor larger
    than that gets a shard of its own), as huggingface_hub's split_torch_state_dict_into_shards."""
    shards, current, current_bytes = [], [], 0
    for name, tensor in state_dict.items():
        size = tensor.numel() * tensor.element_size()
        if size > max_bytes:
            shards.append([name])
            continue
        if current and current_bytes + size > max_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(name)
        current_bytes += size
    if current or not shards:
        shards.append(current)
    return shards


def shard_file_names(weights_name, count):
    """model.safetensors -> model-00001-of-00003.safetensors, ... (the name itself when count is 1)."""
    if count == 1:
        return [weights_name]
    stem, extension = weights_name.rsplit(".", 1)
    return [f"{stem}-{number:05d}-of-{count:05d}.{extension}" for number in range(1, count + 1)]


def remove_stale_weights(directory, weights_name, index_name, written):
    """Removes what an earlier save of the same format and variant left and this one does
    not rewrite: shard files (transformers' rule: names starting like weights_name that end
    in -NNNNN-of-NNNNN), and also the unsharded file or the index, which loaders would
    otherwise read instead of the new files."""
    stem = weights_name.replace(".bin", "").replace(".safetensors", "")
    shard_pattern = re.compile(r"(.*?)-\d{5}-of-\d{5}")
    for filename in os.listdir(directory):
        path = os.path.join(directory, filename)
        if filename in written or not os.path.isfile(path):
            continue
        bare = filename.replace(".bin", "").replace(".safetensors", "")
        if (filename.startswith(stem) and shard_pattern.fullmatch(bare)) or filename in (weights_name, index_name):
            os.remove(path)


# ---- resizing the vocabulary ----------------------------------------------------------
def mean_initialised_rows(old_rows, count):
    """`count` new rows (count, dim) drawn near the mean of old_rows (n, dim): from a
    normal with the rows' mean and 1e-9 times their covariance, or the mean itself when
    that covariance is not positive definite (transformers' mean_resizing, after
    https://nlp.stanford.edu/~johnhew/vocab-expansion.html)."""
    rows = old_rows.detach().float()
    mean = rows.mean(dim=0)
    centered = rows - mean
    covariance = 1e-9 * (centered.T @ centered) / rows.size(0)
    if torch.linalg.cholesky_ex(covariance).info == 0:
        sample = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance).sample((count,))
    else:
        sample = mean[None, :].expand(count, -1)
    return sample.to(old_rows.dtype)


def resize_rows(parameter, new_rows, mean_resizing, init_rows):
    """Gives `parameter` (rows, ...) new_rows rows in place (the Parameter object, and so
    optimizers' and ties' references, is kept): the first rows are kept, added ones come
    from mean_initialised_rows (matrices) / a normal around the mean (biases), or from
    init_rows(count) when mean_resizing is False."""
    old_rows = parameter.size(0)
    kept = min(old_rows, new_rows)
    with torch.no_grad():
        data = parameter.new_empty((new_rows,) + tuple(parameter.shape[1:]))
        data[:kept] = parameter[:kept]
        added = new_rows - old_rows
        if added > 0:
            if not mean_resizing:
                data[old_rows:] = init_rows(added)
            elif parameter.dim() == 2:
                data[old_rows:] = mean_initialised_rows(parameter, added)
            else:
                values = parameter.detach().float()
                data[old_rows:].normal_(mean=values.mean().item(), std=1e-9 * values.std().item())
    parameter.data = data


# ---- the base class of every model ----------------------------------------------------
class XLMPreTrainedModel(nn.Module):
    config_class = XLMConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    # state-dict keys save_pretrained leaves out (transformers' attribute, read by Trainer)
    _keys_to_ignore_on_save = None
    # target parameter name -> source parameter name it shares storage with
    _tied_weights_keys = {}

    @classmethod
    def can_generate(cls):
        """Only the LM head generates (GenerationMixin says True); transformers' pipelines
        ask every model."""
        return False

    def __init__(self, config, *inputs, **kwargs):
        super().__init__()
        if not isinstance(config, XLMConfig):
            raise TypeError(f"config must be an XLMConfig, got {type(config).__name__}")
        config.validate()  # the checks across parameters, which assignments leave out
        self.config = config
        self._register_load_state_dict_pre_hook(_fill_tied_keys, with_module=True)

    # ---- initialisation ---------------------------------------------------------------
    def post_init(self):
        self.init_weights()
        self.tie_weights()

    def init_weights(self):
        """transformers' XLM scheme; modules initialised by an inner post_init are kept."""
        # Children first, so that a parent's own step (sinusoidal positions) comes last.
        for module in reversed(list(self.modules())):
            if not getattr(module, "_xlm_fast_initialized", False):
                self._init_weights(module)
                module._xlm_fast_initialized = True

    @torch.no_grad()
    def _init_weights(self, module):
        config = self.config
        if isinstance(module, nn.Embedding):
            if config.embed_init_std is not None:
                nn.init.normal_(module.weight, mean=0, std=config.embed_init_std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            if config.init_std is not None:
                nn.init.normal_(module.weight, mean=0, std=config.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if getattr(module, "position_embeddings", None) is not None and config.sinusoidal_embeddings:
            from .modeling_xlm import sinusoidal_position_table

            weight = module.position_embeddings.weight
            weight.copy_(sinusoidal_position_table(*weight.shape))
            weight.requires_grad_(False)

    def tie_weights(self):
        """The LM projection shares the input embeddings (when not an adaptive softmax)."""
        if not self.config.tie_word_embeddings:
            return
        for target, source in self._tied_weights_keys.items():
            owner_name, _, attribute = target.rpartition(".")
            owner = self.get_submodule(owner_name)
            if isinstance(getattr(owner, attribute, None), nn.Parameter):
                setattr(owner, attribute, self.get_parameter(source))

    def _tied_target_names(self):
        """Parameter names that are tied copies and so are not saved nor required."""
        names = set()
        for target, source in self._tied_weights_keys.items():
            try:
                if self.get_parameter(target) is self.get_parameter(source):
                    names.add(target)
            except AttributeError:
                continue
        return names

    # ---- the state dict holds a tied weight once ----------------------------------------
    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """nn.Module's state dict without the tied copies (pred_layer.proj.weight when it
        is the input embeddings): a tensor appears once, so safetensors' save_file (which
        refuses tensors that share memory; transformers' Trainer saves a model that is not
        a transformers PreTrainedModel that way), torch.save and DDP/accelerate all see
        each weight once. load_state_dict accepts state dicts with or without the copy."""
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        prefix = args[1] if len(args) > 1 else prefix  # torch's deprecated positional (destination, prefix)
        for name in self._tied_target_names():
            state.pop(prefix + name, None)
        return state

    # ---- conveniences of transformers' PreTrainedModel --------------------------------
    @property
    def base_model(self):
        return getattr(self, self.base_model_prefix, self)

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def get_input_embeddings(self):
        return self.base_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.base_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        """The LM head's projection; None for models without one (as in transformers)."""
        return None

    def num_parameters(self, only_trainable=False, exclude_embeddings=False):
        """Parameters counted once each (a tied weight once); exclude_embeddings leaves
        out the weights of every nn.Embedding (words, positions, languages), as in
        transformers (which Trainer's FLOP count calls)."""
        excluded = ({f"{name}.weight" for name, module in self.named_modules() if isinstance(module, nn.Embedding)}
                    if exclude_embeddings else set())
        return sum(parameter.numel() for name, parameter in self.named_parameters()
                   if name not in excluded and (parameter.requires_grad or not only_trainable))

    def enable_input_require_grads(self):
        """Makes the input embeddings' output require grad, so that gradients reach
        trainable layers behind frozen embeddings (PEFT adapters with gradient
        checkpointing)."""
        self.disable_input_require_grads()
        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(
            lambda module, inputs, output: output.requires_grad_(True))

    def disable_input_require_grads(self):
        hook = getattr(self, "_require_grads_hook", None)
        if hook is not None:
            hook.remove()
            self._require_grads_hook = None

    # ---- vocabulary size --------------------------------------------------------------
    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Gives the word embeddings (and the LM head, which stays tied, with its bias)
        new_num_tokens rows, rounded up to a multiple of pad_to_multiple_of; kept rows keep
        their values, added rows start near the mean of the old ones (mean_resizing) or
        from the model's initialisation. Updates config.vocab_size (n_words) and returns
        the embedding module, which is the same module with a resized weight. With neither
        argument it returns the embeddings unchanged."""
        embeddings = self.get_input_embeddings()
        for name, value in (("new_num_tokens", new_num_tokens), ("pad_to_multiple_of", pad_to_multiple_of)):
            check_optional(name, value, (int,), "a positive int")
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value}")
        if not isinstance(mean_resizing, bool):
            raise TypeError(f"mean_resizing must be True or False, got {mean_resizing!r}")
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embeddings
        if new_num_tokens is None:
            new_num_tokens = embeddings.num_embeddings
        if pad_to_multiple_of is not None:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        pad_id = self.config.pad_token_id
        if pad_id is not None and new_num_tokens <= pad_id:
            raise ValueError(f"new_num_tokens ({new_num_tokens}) must exceed config.pad_token_id ({pad_id}): the "
                             "padding token's row would be dropped")
        head = self.get_output_embeddings()
        if isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
            raise ValueError("resize_token_embeddings: the adaptive-softmax LM head (config.asm=True) cannot be "
                             "resized, its cutoffs split the vocabulary into clusters (transformers cannot resize "
                             "it either)")
        resize_rows(embeddings.weight, new_num_tokens, mean_resizing,
                    functools.partial(self._initial_rows, embeddings))
        embeddings.num_embeddings = new_num_tokens
        if head is not None:
            if head.weight is not embeddings.weight:  # tie_word_embeddings=False
                resize_rows(head.weight, new_num_tokens, mean_resizing, functools.partial(self._initial_rows, head))
            if head.bias is not None:
                resize_rows(head.bias, new_num_tokens, mean_resizing, lambda count: head.bias.new_zeros(count))
            head.out_features = new_num_tokens
        self.config.vocab_size = new_num_tokens
        for module in self.modules():  # XLMModel and XLMPredLayer keep the size for their checks
            if hasattr(module, "n_words"):
                module.n_words = new_num_tokens
        self.tie_weights()
        return embeddings

    def _initial_rows(self, module, count):
        """count new rows for the weight of `module` (an nn.Embedding or nn.Linear),
        initialised as _init_weights (or, without a configured std, torch) initialises it."""
        rows = module.weight.new_empty((count,) + tuple(module.weight.shape[1:]))
        if isinstance(module, nn.Embedding):
            std = self.config.embed_init_std
            return rows.normal_(mean=0, std=1.0 if std is None else std)
        if self.config.init_std is not None:
            return rows.normal_(mean=0, std=self.config.init_std)
        return nn.init.kaiming_uniform_(rows, a=5**0.5)

    # ---- pruning ------------------------------------------------------------------------
    def prune_heads(self, heads_to_prune):
        """Removes attention heads: heads_to_prune maps a layer index to the heads (indices
        among config.n_heads) to remove there. config.pruned_heads records every pruned head,
        so a checkpoint saved afterwards is rebuilt with the pruned shapes when loaded."""
        if not isinstance(heads_to_prune, Mapping):
            raise TypeError(f"heads_to_prune must be a dict {{layer: [heads]}}, got {type(heads_to_prune).__name__}")
        config = self.config
        checked = {}
        for layer, heads in heads_to_prune.items():
            # config.json turns the keys into str; transformers' configs turn them back
            if isinstance(layer, str) and layer.isdigit():
                layer = int(layer)
            if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < config.n_layers:
                raise ValueError(f"heads_to_prune: layer {layer!r} must be an int in [0, {config.n_layers})")
            if isinstance(heads, (str, bytes)) or not hasattr(heads, "__iter__"):
                raise TypeError(f"heads_to_prune[{layer}] must be a list of head indices, got {heads!r}")
            heads = list(heads)
            if not all(isinstance(head, int) and not isinstance(head, bool) and 0 <= head < config.n_heads
                       for head in heads):
                raise ValueError(f"heads_to_prune[{layer}] must hold head indices in [0, {config.n_heads}), "
                                 f"got {heads}")
            checked[layer] = checked.get(layer, set()) | set(heads)
        pruned = {int(layer): set(heads) for layer, heads in (getattr(config, "pruned_heads", None) or {}).items()}
        for layer, heads in checked.items():
            pruned[layer] = pruned.get(layer, set()) | heads
        config.pruned_heads = {layer: sorted(heads) for layer, heads in sorted(pruned.items())}
        self.base_model._prune_heads(checked)

    # ---- gradient checkpointing ---------------------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, every_n_layers=1, offload=False):
        """Recomputes each encoder layer's activations in the backward pass instead of
        storing them (torch.utils.checkpoint; the PyTorch path, in training mode, without a
        decoding cache). gradient_checkpointing_kwargs go to torch.utils.checkpoint
        (use_reentrant=False unless they say otherwise); every_n_layers checkpoints layers
        0, n, 2n, ...; offload keeps the saved layer inputs on the CPU. Gradients equal the
        plain run's: dropout masks are replayed (preserve_rng_state). Also enables
        enable_input_require_grads(), as transformers does."""
        from torch.utils.checkpoint import checkpoint

        if gradient_checkpointing_kwargs is None:
            gradient_checkpointing_kwargs = {}
        if not isinstance(gradient_checkpointing_kwargs, dict):
            raise TypeError("gradient_checkpointing_kwargs must be a dict of torch.utils.checkpoint arguments, got "
                            f"{type(gradient_checkpointing_kwargs).__name__}")
        # torch warns (and will refuse) without an explicit use_reentrant; Trainer may pass {}
        gradient_checkpointing_kwargs = {"use_reentrant": False, **gradient_checkpointing_kwargs}
        if not isinstance(every_n_layers, int) or isinstance(every_n_layers, bool) or every_n_layers < 1:
            raise ValueError(f"every_n_layers must be a positive int, got {every_n_layers!r}")
        if not isinstance(offload, bool):
            raise TypeError(f"offload must be True or False, got {offload!r}")
        function = functools.partial(checkpoint, **gradient_checkpointing_kwargs)
        if offload:
            function = functools.partial(_checkpoint_offloaded, function)
        self._set_gradient_checkpointing(True, function, every_n_layers)
        self.enable_input_require_grads()

    def gradient_checkpointing_disable(self):
        self._set_gradient_checkpointing(False, None, 1)

    @property
    def is_gradient_checkpointing(self):
        return any(getattr(module, "gradient_checkpointing", False) for module in self.modules())

    # transformers 5 names (its Trainer calls activation_checkpointing_enable when present)
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers=1, offload=False):
        self.gradient_checkpointing_enable(activation_checkpointing_kwargs, every_n_layers, offload)

    def activation_checkpointing_disable(self):
        self.gradient_checkpointing_disable()

    @property
    def is_activation_checkpointing(self):
        return self.is_gradient_checkpointing

    def _set_gradient_checkpointing(self, enable, function, every_n_layers):
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):  # XLMModel
                module.gradient_checkpointing = enable
                module._gradient_checkpointing_func = function
                module._checkpoint_every_n_layers = every_n_layers

    # ---- checkpoints -------------------------------------------------------------------
    def save_pretrained(self, save_directory, is_main_process=True, state_dict=None, safe_serialization=True,
                        max_shard_size="5GB", variant=None, push_to_hub=False, **kwargs):
        """Writes config.json and the weights with transformers' names and layout:
        model.safetensors (pytorch_model.bin when safe_serialization=False), split into
        model-00001-of-0000N.safetensors shards plus model.safetensors.index.json when
        larger than max_shard_size (bytes, or "5GB", "10MB", "500KB" in decimal units), with
        variant as model.<variant>.safetensors. Shards and files of an earlier save of the
        same format and variant that this save does not rewrite are removed. A tied weight
        is saved once. is_main_process=False writes nothing (the other ranks of a
        distributed run). Nothing is uploaded: push_to_hub=True is an error, and the hub
        options that only an upload uses are accepted and ignored."""
        save_directory = checked_directory(save_directory)
        for name, flag in (("is_main_process", is_main_process), ("safe_serialization", safe_serialization),
                           ("push_to_hub", push_to_hub)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if push_to_hub:
            raise ValueError("push_to_hub=True: xlm_fast never uploads; save locally and upload the directory with "
                             "huggingface_hub (HfApi().upload_folder)")
        unknown = sorted(set(kwargs) - set(HUB_UPLOAD_OPTIONS))
        if unknown:
            raise TypeError(f"save_pretrained got unexpected keyword arguments {unknown}")
        max_bytes = parse_shard_size(max_shard_size)
        check_optional("variant", variant, (str,), "a str")
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory} is a file, expected a directory")
        if state_dict is not None:
            check_state_dict_argument(state_dict)
        if not is_main_process:
            return
        os.makedirs(save_directory, exist_ok=True)
        self.config.architectures = [type(self).__name__]
        self.config.dtype = str(self.dtype).replace("torch.", "")
        self.config.save_pretrained(save_directory)
        if self.can_generate():
            self.generation_config.save_pretrained(save_directory)
        if state_dict is None:
            state_dict = self.state_dict()
        skipped = self._tied_target_names() | set(self._keys_to_ignore_on_save or ())
        state_dict = {key: value.contiguous() for key, value in state_dict.items() if key not in skipped}

        base_name = SAFE_WEIGHTS_NAME if safe_serialization else WEIGHTS_NAME
        weights_name, index_name = add_variant(base_name, variant), add_variant(base_name + INDEX_SUFFIX, variant)
        shards = split_into_shards(state_dict, max_bytes)
        files = dict(zip(shard_file_names(weights_name, len(shards)), shards))
        remove_stale_weights(save_directory, weights_name, index_name, set(files))
        for filename, names in files.items():
            path = os.path.join(save_directory, filename)
            if safe_serialization:
                save_safetensors({name: state_dict[name] for name in names}, path, metadata={"format": "pt"})
            else:
                # torch.save writes a view's whole storage (q/k/v share the fused-QKV buffer
                # of the Triton path): a view gets its own copy, one shard at a time
                torch.save({name: _owning(state_dict[name]) for name in names}, path)
        if len(files) > 1:
            index = {
                "metadata": {"total_parameters": self.num_parameters(),
                             "total_size": sum(t.numel() * t.element_size() for t in state_dict.values())},
                "weight_map": {name: filename for filename, names in files.items() for name in names},
            }
            with open(os.path.join(save_directory, index_name), "w", encoding="utf-8") as handle:
                handle.write(json.dumps(index, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, cache_dir=None,
                        dtype=None, torch_dtype=None, revision="main", output_loading_info=False,
                        ignore_mismatched_sizes=False, local_files_only=True, low_cpu_mem_usage=None,
                        use_safetensors=None, device_map=None, attn_implementation=None, trust_remote_code=None,
                        force_download=False, proxies=None, token=None, subfolder="", variant=None, **kwargs):
        """Loads a checkpoint from a local directory or the local Hugging Face cache.

        Keyword arguments that are not loading options update the config (as in
        transformers, e.g. num_labels=3). The model is returned in eval mode.

        - use_safetensors: True reads safetensors only, False pytorch_model.bin only, None
          prefers safetensors. subfolder and variant (model.<variant>.safetensors) as in
          transformers.
        - low_cpu_mem_usage: xlm_fast always loads this way (the tensors are read one at a
          time, or memory-mapped, and copied into the model: no second copy of the
          weights), so True and False give the same model.
        - device_map: None (the CPU), a device ("cpu", "cuda:0", an int CUDA index, a
          torch.device), "auto" (the first CUDA device, else the CPU) or {"": device}:
          the model is loaded onto that one device (model.hf_device_map records it). A map
          that spreads modules over several devices is an error.
        - attn_implementation: "eager", "sdpa" or "flash_attention_2" is recorded as
          config._attn_implementation, as transformers does, but xlm_fast always runs its
          own attention (the PyTorch path, or the fused Triton kernels on CUDA).
        - Nothing is downloaded: proxies and token are ignored, trust_remote_code too (XLM
          needs no remote code), and force_download=True, which asks for a new download,
          is an error for a hub id (a local directory is read as it is, as in transformers).
        """
        if dtype is None:
            dtype = torch_dtype
        elif torch_dtype is not None and torch_dtype_from_name(torch_dtype) != torch_dtype_from_name(dtype):
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree (torch_dtype is the old name "
                             "of dtype: pass one)")
        for name, value in (("low_cpu_mem_usage", low_cpu_mem_usage), ("use_safetensors", use_safetensors),
                            ("trust_remote_code", trust_remote_code)):
            check_optional(name, value, (bool,), "True, False")
        for name, value in (("force_download", force_download), ("output_loading_info", output_loading_info),
                            ("ignore_mismatched_sizes", ignore_mismatched_sizes)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        check_optional("proxies", proxies, (dict,), "a dict")
        check_optional("token", token, (str, bool), "a str or bool")
        check_optional("variant", variant, (str,), "a str")
        if not isinstance(subfolder, str):
            raise TypeError(f"subfolder must be a str, got {subfolder!r}")
        if attn_implementation is not None and attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS} or None, got "
                             f"{attn_implementation!r}")
        device = resolve_device_map(device_map)
        path = checked_path(pretrained_model_name_or_path)
        if force_download and not os.path.isdir(path):
            raise ValueError(f"force_download=True asks to download {path!r} again; xlm_fast never downloads: "
                             "drop force_download, or fetch it with huggingface_hub first")
        model_dir = os.path.join(resolve_model_dir(path, cache_dir, revision), subfolder)
        if not os.path.isdir(model_dir):
            raise OSError(f"subfolder={subfolder!r}: {model_dir} is not a directory")

        if config is None:
            config = XLMConfig.from_pretrained(model_dir)
            unknown = sorted(key for key in kwargs if not hasattr(config, key))
            if unknown:
                raise TypeError(f"from_pretrained got keyword arguments that are neither loading options "
                                f"nor XLMConfig attributes: {unknown}")
            for key, value in kwargs.items():
                setattr(config, key, value)
        elif not isinstance(config, XLMConfig):
            raise TypeError(f"config must be an XLMConfig, got {type(config).__name__}")
        elif kwargs:
            raise TypeError(f"from_pretrained got unexpected keyword arguments {sorted(kwargs)}")
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        state_dict = load_checkpoint_state_dict(model_dir, use_safetensors, variant)
        model = cls(config, *model_args)
        info = model.load_checkpoint(state_dict, ignore_mismatched_sizes=ignore_mismatched_sizes)
        _report_loading(info, type(model).__name__, pretrained_model_name_or_path)
        model.to(dtype=resolve_dtype(dtype, config, state_dict))
        if device is not None:
            model.to(device)
            model.hf_device_map = {"": device.index if device.type == "cuda" else device.type}
        model.eval()
        if model.can_generate():
            model._load_generation_config(model_dir)
        return (model, info) if output_loading_info else model

    def load_checkpoint(self, state_dict, ignore_mismatched_sizes=False):
        """Loads a transformers-format state dict (or CheckpointTensors), adding or
        stripping the base-model prefix as needed; tensors are copied one at a time, after
        every shape was checked. Returns transformers' loading-info dict."""
        check_state_dict_argument(state_dict)
        prefix = self.base_model_prefix + "."
        expected = self.state_dict()
        tied = self._tied_target_names()
        has_prefix = any(key.startswith(prefix) for key in state_dict)
        expects_prefix = any(key.startswith(prefix) for key in expected)
        # checkpoint name -> model name
        if expects_prefix and not has_prefix:
            renamed = {key: prefix + key for key in state_dict}
        elif has_prefix and not expects_prefix:
            renamed = {key: key[len(prefix):] if key.startswith(prefix) else key for key in state_dict}
        else:
            renamed = {key: key for key in state_dict}
        shape_of = state_dict.shape if isinstance(state_dict, CheckpointTensors) else lambda k: state_dict[k].shape
        unexpected, mismatched, usable = [], [], {}
        for source, key in renamed.items():
            shape = shape_of(source)
            if key not in expected:
                # A tie target the model lacks (the adaptive softmax has no single
                # weight) holds a copy of the embeddings: nothing is lost.
                if not key.endswith(IGNORED_CHECKPOINT_SUFFIXES) and key not in self._tied_weights_keys:
                    unexpected.append(key)
            elif shape != expected[key].shape:
                if not ignore_mismatched_sizes:
                    raise ValueError(
                        f"checkpoint parameter {key} has shape {tuple(shape)}, the model expects "
                        f"{tuple(expected[key].shape)} (pass ignore_mismatched_sizes=True to re-initialise it)"
                    )
                mismatched.append((key, tuple(shape), tuple(expected[key].shape)))
            else:
                usable[key] = source
        missing = [key for key in expected if key not in usable and key not in tied
                   and not any(key == m[0] for m in mismatched)]
        with torch.no_grad():
            for key, source in usable.items():
                expected[key].copy_(state_dict[source])  # read, copied (and cast), dropped
        self.tie_weights()
        return {"missing_keys": missing, "unexpected_keys": unexpected,
                "mismatched_keys": mismatched, "error_msgs": []}


def _fill_tied_keys(module, state_dict, prefix, *args):
    """load_state_dict pre-hook: a state dict without a tied copy (as state_dict() gives
    it) gets the copy from its source, so strict loading does not report it missing."""
    for target, source in module._tied_weights_keys.items():
        if prefix + target not in state_dict and prefix + source in state_dict and target in \
                module._tied_target_names():
            state_dict[prefix + target] = state_dict[prefix + source]


def _owning(tensor):
    """tensor, or a copy when it is a view into a larger storage."""
    return tensor if tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size() else tensor.clone()


def _checkpoint_offloaded(checkpoint_function, *args, **kwargs):
    """checkpoint_function with the saved layer inputs moved to (pinned) CPU memory."""
    with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
        return checkpoint_function(*args, **kwargs)


def checked_directory(save_directory):
    if not isinstance(save_directory, (str, os.PathLike)):
        raise TypeError(f"save_directory must be a str or os.PathLike, got {type(save_directory).__name__}")
    return os.fspath(save_directory)


def _report_loading(info, class_name, source):
    if info["unexpected_keys"]:
        logger.warning(
            "Some weights of the model checkpoint at %s were not used when initializing %s: %s",
            source, class_name, info["unexpected_keys"],
        )
    if info["missing_keys"]:
        logger.warning(
            "Some weights of %s were not initialized from the model checkpoint at %s and are newly "
            "initialized: %s\nYou should probably TRAIN this model on a down-stream task.",
            class_name, source, info["missing_keys"],
        )
    if info["mismatched_keys"]:
        logger.warning(
            "Some weights of %s were not initialized from the model checkpoint at %s because the shapes "
            "did not match and are newly initialized: %s", class_name, source, info["mismatched_keys"],
        )
